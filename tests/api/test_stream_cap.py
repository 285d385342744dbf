"""Open event streams are capped per key (SSE_MAX_STREAMS_PER_KEY): over it, 429; a slot comes back when its
stream ends (the final) or its client goes away."""

from __future__ import annotations

import asyncio

import httpx

from shared.contracts.models import JobStatus, Summary
from shared.contracts.settings import Settings
from shared.server.api import create_app
from shared.stores.sqlite import SQLiteStore
from testkit.serve import LoopServer
from tests.conftest import make_job
from tests.fakes import RecordingDispatcher

KEY, OTHER = "stream-key-1", "stream-key-2"


class Silent(RecordingDispatcher):
    async def submit(self, refs) -> None:  # accepted, and nothing happens until the test says so
        self.jobs.append(refs[0].job_id)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def open_stream(client: httpx.AsyncClient, job_id: str, key: str) -> tuple[httpx.Response, asyncio.Task]:
    """Open a stream and keep reading it in a task; the response is returned once its headers are in."""
    started: asyncio.Future[httpx.Response] = asyncio.get_running_loop().create_future()

    async def read() -> None:
        async with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=auth(key)) as r:
            started.set_result(r)
            async for _ in r.aiter_lines():
                pass

    task = asyncio.create_task(read())
    await asyncio.wait({started, task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if started.done():
        return started.result(), task
    await task  # raised
    raise AssertionError("the stream did not start")


async def eventually(predicate, within_s: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_streams_over_the_cap_get_429_and_slots_come_back(tmp_path):
    settings = Settings(_env_file=None, api_keys=f"{KEY},{OTHER}", rate_limit_per_minute=0, sse_poll_s=0.05,
                        sse_max_streams_per_key=2)
    store = SQLiteStore(tmp_path / "jobs.db")
    app = create_app(settings, store=store, dispatcher=Silent())
    async with LoopServer(app) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            job = make_job(2, id="capped")
            assert (await client.post("/v1/jobs", json=job.wire(), headers=auth(KEY))).status_code == 202
            first, t1 = await open_stream(client, "capped", KEY)
            second, t2 = await open_stream(client, "capped", KEY)
            assert first.status_code == second.status_code == 200
            # a third stream for the same key is refused, with a clear message; another key is not affected
            async with client.stream("GET", "/v1/jobs/capped/events", headers=auth(KEY)) as r:
                assert r.status_code == 429
                await r.aread()
                assert "2 open event streams" in r.json()["detail"]
            other, t3 = await open_stream(client, "capped", OTHER)
            assert other.status_code == 200

            streams, keys = app.state.llm_jobs.streams, app.state.llm_jobs.auth.admin_keys
            key, other_key = keys.identify(KEY), keys.identify(OTHER)  # streams are counted by key id
            assert streams.open(key) == 2 and streams.open(other_key) == 1

            # the client goes away: its slot comes back
            t1.cancel()
            await asyncio.gather(t1, return_exceptions=True)
            await eventually(lambda: streams.open(key) == 1)
            again, t4 = await open_stream(client, "capped", KEY)
            assert again.status_code == 200

            # the job ends: every open stream ends with the final and gives its slot back
            await store.begin(job)
            await store.finish("capped", JobStatus.completed, Summary.empty(2))
            await asyncio.wait_for(asyncio.gather(t2, t3, t4), 10)
            await eventually(lambda: streams.open(key) == 0 and streams.open(other_key) == 0)
            for _ in range(3):  # a finished job's stream ends at once, and gives its slot back each time
                r, task = await open_stream(client, "capped", KEY)
                assert r.status_code == 200
                await asyncio.wait_for(task, 10)
            await eventually(lambda: streams.open(key) == 0)
    await store.close()


