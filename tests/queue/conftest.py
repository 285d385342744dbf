from __future__ import annotations

import pytest
import pytest_asyncio

from shared.queue import JobQueue

TOKEN = "test-upstash-token"


@pytest.fixture(scope="session")
def redis_server():
    from tests.support.upstash import RedisServer

    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def upstash(redis_server):
    from tests.support.upstash import UpstashAdapter

    adapter = UpstashAdapter(redis_server.url, TOKEN).start()
    yield adapter
    adapter.stop()


def make_queue(upstash, **kw) -> JobQueue:
    # the trailing slash is on purpose: the queue must strip it
    return JobQueue.connect(upstash.url + "/", kw.pop("token", TOKEN),
                            **{"retry_backoff_s": 0.2, "retry_backoff_max_s": 1, **kw})


@pytest_asyncio.fixture
async def queue(redis_server, upstash):
    redis_server.flush()
    q = make_queue(upstash)
    yield q
    await q.close()
