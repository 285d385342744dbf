"""The event stream's transport details, with no engine: keep-alive pings, resume, and the store's final."""

from __future__ import annotations

import asyncio

import httpx

from shared.contracts.events import ChunkEvent
from shared.contracts.models import JobStatus, Progress, Summary
from shared.contracts.settings import Settings
from shared.server.api import create_app
from shared.stores.sqlite import SQLiteStore
from testkit.serve import LoopServer
from tests.conftest import make_job
from tests.fakes import RecordingDispatcher, sample_events


def chunk(job_id: str, seq: int) -> ChunkEvent:
    progress = Progress(completed=0, failed=0, total=2, percentage=0, elapsed_s=0, eta_s=None, items_per_s=0,
                        tokens_per_s=0)
    return ChunkEvent(job_id=job_id, seq=seq, results=[], progress=progress)


class Silent(RecordingDispatcher):
    async def submit(self, refs) -> None:  # accepted, and nothing happens yet
        self.jobs.append(refs[0].job_id)


async def test_pings_on_an_idle_stream_then_resume_then_final_from_the_store(tmp_path):
    settings = Settings(_env_file=None, rate_limit_per_minute=0, sse_ping_s=0.2, sse_poll_s=0.05)
    store = SQLiteStore(tmp_path / "sse.db")
    dispatcher = Silent()
    async with LoopServer(create_app(settings, store=store, dispatcher=dispatcher)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            job = make_job(2, id="sse-1")
            r = await client.post("/v1/jobs", json=job.model_dump(mode="json", exclude={"rejected"}))
            assert r.status_code == 202
            dispatcher.events.publish("sse-1", chunk("sse-1", 1))
            lines: list[str] = []

            async def read(after: str | None) -> None:
                headers = {"Last-Event-ID": after} if after else {}
                async with client.stream("GET", "/v1/jobs/sse-1/events", headers=headers) as r:
                    async for line in r.aiter_lines():
                        lines.append(line)

            reader = asyncio.create_task(read(None))
            await asyncio.sleep(1.0)  # idle: nothing new is published
            reader.cancel()
            assert "id: 1" in lines and any(line.startswith(": ping") for line in lines)

            dispatcher.events.publish("sse-1", chunk("sse-1", 2))
            await store.begin(job)
            await store.finish("sse-1", JobStatus.completed, Summary.empty(2))
            lines.clear()
            await asyncio.wait_for(read("1"), 10)  # resumes after id 1, then the store's final closes it
            ids = [line[4:] for line in lines if line.startswith("id: ")]
            assert ids == ["2", "final"]
    await store.close()


async def test_every_event_type_round_trips_through_the_sse_stream_to_the_sdk(tmp_path):
    from shared.sdk._backends import _sse

    settings = Settings(_env_file=None, rate_limit_per_minute=0, sse_poll_s=0.05)
    store = SQLiteStore(tmp_path / "sse.db")
    dispatcher = Silent()
    async with LoopServer(create_app(settings, store=store, dispatcher=dispatcher)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            r = await client.post("/v1/jobs", json=make_job(3, id="rt").wire())
            assert r.status_code == 202
            events = sample_events("rt")
            for e in events:
                dispatcher.events.publish("rt", e)
            async with client.stream("GET", "/v1/jobs/rt/events") as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                got = [pair async for pair in _sse(r.aiter_lines())]
    assert [i for i, _ in got] == [str(n) for n in range(1, len(events) + 1)]
    assert [type(e) for _, e in got] == [type(e) for e in events]
    assert [e for _, e in got] == events
    await store.close()
