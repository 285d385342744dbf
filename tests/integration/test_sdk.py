"""The SDK on the real CPU engine: against the HTTP API (`http`), against the local RunPod harness
(`runpod`, CANCELLED included), and in process (`local`); the blocking Client too."""

from __future__ import annotations

import asyncio

import pytest

from handler.platforms.runpod import RunpodHandler
from handler.platforms.runpod_harness import create_harness_app
from handler.service import JobService
from shared import AsyncClient, ChunkEvent, Client, Event, FinalEvent, InputError, JobFailed, Outcome
from shared.stores.sqlite import SQLiteStore
from testkit.serve import LoopServer
from tests.integration.conftest import engine_settings
from tests.integration.test_api import KEY, api  # noqa: F401 (the API fixture)

ITEMS = [{"custom_id": f"s{i}", "prompt": f"Say the number {i}."} for i in range(8)]
OPTIONS = {"sampling": {"max_tokens": 8, "temperature": 0}, "chunk_size": 3}


async def follow(job) -> list[Event]:
    return [event async for event in job.stream()]


async def test_http_backend_submit_stream_results(api):  # noqa: F811
    client, settings = api
    async with AsyncClient("http", base_url=str(client.base_url), api_key=KEY, settings=settings) as sdk:
        job = await sdk.submit(ITEMS, id="sdk-http", **OPTIONS)
        events = await follow(job)
        assert [e.type for e in events] == ["chunk", "chunk", "chunk", "final"]
        assert isinstance(events[0], ChunkEvent) and isinstance(events[-1], FinalEvent)  # models, validated
        assert (await job.wait()).outcome is Outcome.completed
        results = [r async for r in job.results(page_size=3)]  # three pages
        assert [r.custom_id for r in results] == [f"s{i}" for i in range(8)]
        assert (await sdk.get("sdk-http"))["completed"] + (await sdk.get("sdk-http"))["failed"] == 8

        with pytest.raises(InputError) as e:  # validated before anything is sent
            await sdk.submit([{"custom_id": "x", "prompt": "hi", "sampling": {"top_p": 5}}])
        assert "sampling.top_p" in str(e.value)

    def blocking() -> list[str]:
        with Client("http", base_url=str(client.base_url), api_key=KEY, settings=settings) as c:
            handle = c.submit(ITEMS[:2], id="sdk-sync", **OPTIONS)
            types = [e.type for e in handle.stream()]
            assert handle.wait().outcome is Outcome.completed
            return types + [r.custom_id for r in handle.results()]

    assert await asyncio.to_thread(blocking) == ["chunk", "final", "s0", "s1"]


@pytest.fixture
async def harness_url(engine, tmp_path):
    service = JobService(engine, engine_settings(default_chunk_interval_s=30), store=SQLiteStore(tmp_path / "h.db"))
    handler = RunpodHandler(service)
    async with LoopServer(create_harness_app(handler.handle, concurrency_modifier=handler.concurrency)) as server:
        yield f"{server.url}/v2"
    await service.close()


async def test_runpod_backend_against_the_harness_including_cancelled(harness_url):
    async with AsyncClient("runpod", base_url=harness_url, endpoint_id="ep-local", api_key="rp-key",
                           poll_s=0.2) as sdk:
        job = await sdk.submit(ITEMS, id="sdk-rp", **OPTIONS)
        events = await follow(job)
        assert [e.type for e in events] == ["chunk", "chunk", "chunk", "final"]
        assert events[-1].outcome is Outcome.completed and events[-1].summary.completed == 8
        assert [r.custom_id async for r in job.results()] == [f"s{i}" for i in range(8)]

        long = await sdk.submit([{"custom_id": f"l{i}", "prompt": "Tell a long story."} for i in range(32)],
                                id="sdk-rp-cancel", sampling={"max_tokens": 96}, chunk_size=1)
        stream = long.stream()
        first = await anext(stream)
        assert isinstance(first, ChunkEvent)
        assert (await long.cancel())["status"] == "cancelled"
        rest = [e async for e in stream]
        final = rest[-1]  # RunPod's CANCELLED ends the stream; it is not an error
        assert isinstance(final, FinalEvent) and final.job_id == "sdk-rp-cancel"
        assert final.outcome is Outcome.cancelled and final.summary.total == 32
        assert (await long.status())["status"] == "cancelled"


async def test_local_backend_runs_in_process(engine, tmp_path):
    settings = engine_settings(sqlite_path=tmp_path / "local.db", default_chunk_interval_s=30)
    store = SQLiteStore(tmp_path / "local.db")
    service = JobService(engine, settings, store=store)
    async with AsyncClient("local", settings=settings, store=store, service=service) as sdk:
        job = await sdk.submit(ITEMS[:5], id="sdk-local", **OPTIONS)
        final = await job.wait(timeout=300)
        assert final.outcome is Outcome.completed and final.summary.completed == 5
        assert len([r async for r in job.results()]) == 5
        assert (await sdk.get("sdk-local"))["status"] == "completed"

        dead = AsyncClient("local", settings=settings, store=store,
                           service=JobService(_Dead(), settings, store=store))
        failing = await dead.submit([{"custom_id": "d0", "prompt": "x"}], id="sdk-dead")
        with pytest.raises(JobFailed, match="gone"):
            await failing.wait(timeout=60)


class _Dead:
    """An engine that died: every job on it fails with the reason."""

    model_name = "dead"
    served_models = frozenset({"dead"})
    capacity = 2
    alive = False

    async def complete(self, request):
        from shared.contracts.errors import EngineDeadError

        raise EngineDeadError("the engine is gone")

    async def close(self) -> None: ...
