"""Upstash's size limits, in the adapter and in the product (issue 12, item 5).

The Upstash adapter (testkit/upstash.py) refuses what Upstash refuses: a command over 10 MB with
"ERR max request size exceeded. Limit: ... bytes, Actual: ... bytes. ...", and a write that would make
one record bigger than 100 MB with "ERR max single record size exceeded". The product never sends a
job's items through the queue: they are staged in the store and the queue carries shard references, so
a 30 MB job goes through. `JobQueue.enqueue` measures what it sends and raises `PayloadTooLarge` without
a request (a whole inline job, or a reference whose options are too big), and the API answers 413
naming the size, the limit and what to do, with nothing stored and nothing queued.
"""

from __future__ import annotations

import httpx
import pytest
from upstash_redis.asyncio import Redis
from upstash_redis.errors import UpstashError

from handler.worker import Worker
from shared.contracts.errors import PayloadTooLarge, QueueError
from shared.contracts.models import Item, Job, JobStatus
from shared.contracts.settings import Settings
from shared.queue import upstash as product
from shared.queue.upstash import JobQueue
from shared.server.api import create_app
from shared.server.dispatch import QueueDispatcher
from shared.server.lifecycle import JobLifecycle
from shared.stores.sqlite import SQLiteStore
from testkit import UPSTASH_TOKEN
from testkit import upstash as double
from testkit.serve import free_port
from tests.conftest import make_queue
from tests.fakes import FakeEngine

MB = 1024 * 1024


def big_job(job_id: str, total_bytes: int, items: int = 3) -> Job:
    """A job of about `total_bytes` on the wire, built cheaply: a few items with long prompts."""
    return Job(id=job_id, items=[Item(custom_id=f"c{i}", prompt="x" * (total_bytes // items)) for i in range(items)])


def client_for(adapter) -> Redis:
    return Redis(url=adapter.url, token=UPSTASH_TOKEN, rest_retries=0, allow_telemetry=False)


@pytest.fixture
def small_adapter(redis_server):
    """An adapter over the same redis-server with tiny limits: a plan's limits, at a test's size."""
    adapter = double.UpstashAdapter(redis_server.url, UPSTASH_TOKEN, max_request_bytes=1000,
                                    max_record_bytes=2000).start()
    redis_server.flush()
    yield adapter
    adapter.stop()


def test_the_product_and_the_double_hold_the_same_limits():
    assert product.MAX_REQUEST_BYTES == double.MAX_REQUEST_BYTES == 10_485_760
    assert product.MAX_RECORD_BYTES == double.MAX_RECORD_BYTES == 104_857_600


async def test_the_adapter_refuses_an_11_mb_request_with_upstashs_error(redis_server, upstash):
    redis_server.flush()
    r = client_for(upstash)
    try:
        with pytest.raises(UpstashError) as refused:
            await r.set("limits:big", "x" * (11 * MB))
        text = str(refused.value)
        assert text.startswith("ERR max request size exceeded. Limit: 10485760 bytes, Actual: ")
        assert int(text.split("Actual: ")[1].split(" ")[0]) > 11 * MB
        assert "upstash.com/docs/redis/troubleshooting/max_request_size_exceeded" in text
        assert await r.get("limits:big") is None  # nothing was written
        assert await r.set("limits:small", "x" * MB) is True  # under the limit: as before
    finally:
        await r.close()
    # one command on its own is answered 413; in a pipeline only that command is refused (200)
    big = ["SET", "limits:big", "x" * (11 * MB)]
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {UPSTASH_TOKEN}"}, timeout=30) as http:
        one = await http.post(upstash.url, json=big)
        assert one.status_code == 413 and one.json()["error"].startswith("ERR max request size exceeded")
        many = await http.post(f"{upstash.url}/pipeline", json=[["SET", "limits:a", "1"], big, ["GET", "limits:a"]])
        assert many.status_code == 200
        assert [("error" in x) for x in many.json()] == [False, True, False]
        assert many.json()[2]["result"] == "1"


async def test_the_adapter_refuses_a_write_that_would_make_a_record_too_big(small_adapter):
    r = client_for(small_adapter)
    try:
        for n in (1, 2, 3):  # each request is under its limit (1000 bytes); the record grows to 1800
            assert await r.append("limits:s", "a" * 600) == 600 * n
        with pytest.raises(UpstashError, match=r"^ERR max single record size exceeded$"):
            await r.append("limits:s", "b" * 600)
        assert await r.strlen("limits:s") == 1800  # refused before it ran
        pushed = 0
        with pytest.raises(UpstashError, match="max single record size exceeded"):  # a list counts its elements
            for _ in range(5):
                await r.rpush("limits:l", "d" * 500)
                pushed += 1
        assert 2 <= pushed <= 3 and await r.llen("limits:l") == pushed
        assert await r.set("limits:s", "f" * 900) is True  # SET replaces the record: only its own size counts
        assert await r.get("limits:s") == "f" * 900  # reads and deletes are never refused for it
        assert await r.delete("limits:s", "limits:l") == 2
    finally:
        await r.close()


async def test_the_limit_binds_a_reply_too(small_adapter):
    r = client_for(small_adapter)
    try:
        for _ in range(3):
            await r.rpush("limits:reply", "g" * 400)
        with pytest.raises(UpstashError, match=r"max request size exceeded\. Limit: 1000 bytes, Actual: 1200 bytes"):
            await r.lrange("limits:reply", 0, -1)  # Upstash measures the answer too
        assert await r.lrange("limits:reply", 0, 0) == ["g" * 400]
    finally:
        await r.close()


async def test_enqueue_refuses_a_job_over_10_mb_before_sending_it():
    # a queue whose Upstash is not there: a request would fail with QueueUnavailable
    nowhere = JobQueue.connect(f"http://127.0.0.1:{free_port()}", UPSTASH_TOKEN, timeout_s=2)
    job = big_job("too-big", 11 * MB)
    try:
        with pytest.raises(PayloadTooLarge) as refused:
            await nowhere.enqueue(job)
        with pytest.raises(PayloadTooLarge):
            await nowhere.resubmit(job)
        with pytest.raises(PayloadTooLarge):
            nowhere.check(job)
    finally:
        await nowhere.close()
    e = refused.value
    assert e.limit == 10_485_760 and e.size > 11 * MB
    assert "10485760 bytes" in e.message and str(e.size) in e.message
    assert "Upstash" in e.message and "Split it" in e.message and "stage its items in the store" in e.message
    assert e.issues[0].field == "items"


async def test_the_product_measures_a_command_as_the_adapter_does(redis_server, queue):
    """The product's measure is the adapter's to the byte: a job exactly at the limit goes, one byte
    under it is refused by both."""
    # quotes, backslashes and non-ASCII are escaped twice on the way (a JSON document in a JSON command)
    job = Job(id="measured", items=[Item(custom_id="a", prompt='x' * 10_000 + ' "quoted" \\ and ünïcode'),
                                    Item(custom_id="b", prompt="y" * 10_000)])
    tight = JobQueue.connect(f"http://127.0.0.1:{free_port()}", UPSTASH_TOKEN, max_request_bytes=1)
    with pytest.raises(PayloadTooLarge) as measured:
        await tight.enqueue(job)
    await tight.close()
    size = measured.value.size
    for limit, fits in ((size - 1, False), (size, True)):
        redis_server.flush()
        adapter = double.UpstashAdapter(redis_server.url, UPSTASH_TOKEN, max_request_bytes=limit).start()
        q = make_queue(adapter)
        try:
            if fits:
                assert await q.enqueue(job) is True
            else:
                with pytest.raises(QueueError, match=rf"max request size exceeded\. Limit: {limit} bytes, "
                                                     rf"Actual: {size} bytes"):
                    await q.enqueue(job)
        finally:
            await q.close()
            adapter.stop()


async def test_a_job_refused_after_it_was_recorded_is_failed_not_left_queued(redis_server, queue, tmp_path):
    """Without the pre-check (a dispatcher whose check passes it), the refusal comes from enqueue: the
    lifecycle records the job failed, with the reason, and raises it."""
    redis_server.flush()
    store = SQLiteStore(tmp_path / "jobs.db")
    dispatcher = QueueDispatcher(queue)
    dispatcher.check = lambda ref: None
    lifecycle = JobLifecycle(store, dispatcher, Settings(_env_file=None, store_retry_s=2))
    job = Job(id="late", metadata={"note": "x" * 1000}, items=[Item(custom_id="a", prompt="x")])
    queue.max_request_bytes = 1000
    with pytest.raises(PayloadTooLarge):
        await lifecycle.submit(job)
    record = await lifecycle.get("late")
    assert record.status == JobStatus.failed and "PayloadTooLarge" in record.summary.reason
    assert await queue.waiting() == 0
    await store.close()


async def test_a_30_mb_job_goes_through_the_queue_as_references(redis_server, upstash, tmp_path):
    """The API stages a 30 MB job's items in the store and queues one small reference per shard; a
    worker reads its shard from the store and every item is stored once."""
    redis_server.flush()
    settings = Settings(_env_file=None, dispatcher="queue", upstash_redis_rest_url=upstash.url,
                        upstash_redis_rest_token=UPSTASH_TOKEN, rate_limit_per_minute=0, shard_size=4000,
                        sqlite_path=tmp_path / "jobs.db", validation_timeout_s=120)
    app = create_app(settings)
    n, size = 30_000, 1000
    job = Job(id="thirty", chunk_size=500,
              items=[Item(custom_id=f"c{i:05d}", prompt=f"{i} " + "y" * size) for i in range(n)])
    body = job.model_dump_json(exclude_none=True).encode()
    assert len(body) > 30 * 10**6
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://api.test", timeout=300) as client:
        r = await client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 202, r.text[:500]
        assert r.json()["total"] == n
    lifecycle = app.state.llm_jobs.lifecycle
    queue = lifecycle.dispatcher.queue
    listed = await queue.list()
    assert listed["queued_default"] == [f"thirty#{k}" for k in range(8)]  # 30,000 / 4,000 -> 8 shards
    docs = [await queue._redis.get(f"{queue.p}job:thirty#{k}") for k in range(8)]
    assert max(len(d) for d in docs) < 2000  # references, not items
    assert await lifecycle.store.count_items("thirty") == n

    worker = Worker(FakeEngine(capacity=64), queue, lifecycle.store, drain=True, lease_s=30)
    stats = await worker.run()
    assert stats.done == 8
    record = await lifecycle.get("thirty")
    assert (record.status, record.completed, record.total) == (JobStatus.completed, n, n)
    finals = [e.event for e in await queue.events("thirty", count=1000) if e.event.type == "final"]
    assert len(finals) == 1 and finals[0].summary.completed == n
    await lifecycle.close()


async def test_the_api_answers_413_for_options_over_the_limit_and_queues_nothing(redis_server, upstash, tmp_path):
    redis_server.flush()
    settings = Settings(_env_file=None, dispatcher="queue", upstash_redis_rest_url=upstash.url,
                        upstash_redis_rest_token=UPSTASH_TOKEN, rate_limit_per_minute=0,
                        sqlite_path=tmp_path / "jobs.db")
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://api.test", timeout=120) as client:
        heavy = Job(id="heavy", metadata={"blob": "z" * (11 * MB)}, items=[Item(custom_id="a", prompt="hi")])
        r = await client.post("/v1/jobs", json=heavy.wire())
        assert r.status_code == 413, r.text[:500]
        detail = r.json()["detail"]
        assert "10485760 bytes" in detail and "Upstash" in detail
        assert "options" in detail and "metadata" in detail
        assert (await client.get("/v1/jobs/heavy")).status_code == 404  # nothing recorded: never "queued"
        small = await client.post("/v1/jobs", json=big_job("small", 1000).wire())
        assert small.status_code == 202  # the same server queues a job that fits
    queue = app.state.llm_jobs.lifecycle.dispatcher.queue
    assert await queue.list() == {"queued_high": [], "queued_default": ["small"], "queued_train": [], "running": [],
                                  "retrying": []}
    await app.state.llm_jobs.lifecycle.close()
