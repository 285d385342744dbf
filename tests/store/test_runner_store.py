"""The runner with a store: durability before yield, resume, double delivery, outages, cancellation.
The engine here is the fake one; tests/integration/test_persistence.py repeats the key cases on
the real engine."""

from __future__ import annotations

import asyncio

from handler.runner import run_job
from shared.contracts.errors import StoreUnavailable
from shared.contracts.events import ChunkEvent, FinalEvent
from shared.contracts.models import JobStatus
from tests.conftest import make_job
from tests.fakes import FakeEngine


async def drain(gen):
    return [e async for e in gen]


async def test_each_chunk_is_stored_before_it_is_yielded(store):
    job = make_job(25)
    seen = 0
    async for ev in run_job(job, FakeEngine(), store=store, chunk_size=10):
        if isinstance(ev, ChunkEvent):
            seen += len(ev.results)
            stored = await store.done_ids(job.id)
            assert {r.custom_id for r in ev.results} <= set(stored)
            assert len(stored) == seen
    rec = await store.get_job(job.id)
    assert (rec.status, rec.completed, rec.total) == (JobStatus.completed, 25, 25)


async def test_a_rerun_skips_stored_items_and_reports_them_done(store):
    job = make_job(20)
    first = FakeEngine(capacity=1)
    gen = run_job(job, first, store=store, chunk_size=5)
    await anext(gen)
    await anext(gen)  # two chunks (10 items) stored, then the process "dies"
    await gen.aclose()
    assert len(await store.done_ids(job.id)) == 10

    second = FakeEngine()
    events = await drain(run_job(job, second, store=store, chunk_size=5))
    assert len(second.started) == 10 and not set(second.started) & set(first.started[:10])
    chunks = [e for e in events if isinstance(e, ChunkEvent)]
    assert chunks[0].progress.skipped == 10 and chunks[0].progress.completed == 15
    final = events[-1]
    assert final.status == JobStatus.completed and final.summary.skipped == 10
    rec = await store.get_job(job.id)
    assert (rec.completed, rec.failed, rec.status) == (20, 0, JobStatus.completed)


async def test_double_delivery_does_no_engine_work_the_second_time(store):
    job = make_job(12)
    await drain(run_job(job, FakeEngine(), store=store))
    again = FakeEngine()
    events = await drain(run_job(job, again, store=store))
    assert again.started == []
    assert [type(e) for e in events] == [FinalEvent]
    assert events[0].status == JobStatus.completed and events[0].summary.completed == 12
    assert (await store.get_job(job.id)).completed == 12


async def test_closing_the_stream_records_cancelled(store):
    job = make_job(10)
    gen = run_job(job, FakeEngine(capacity=2, delay=lambda r: 0 if r.custom_id == "c0" else 30), store=store,
                  chunk_size=1)
    await anext(gen)
    await gen.aclose()
    rec = await store.get_job(job.id)
    assert (rec.status, rec.completed) == (JobStatus.cancelled, 1)
    assert rec.summary.reason == "cancelled"


class Flaky:
    """A store whose writes fail `n` times (unreachable), then work."""

    def __init__(self, inner, fail_writes: int):
        self.inner, self.left = inner, fail_writes

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def write(self, job_id, results):
        if self.left:
            self.left -= 1
            raise StoreUnavailable("connection refused")
        await self.inner.write(job_id, results)


async def test_a_store_outage_is_retried_and_nothing_is_lost(store):
    job = make_job(15)
    events = await drain(run_job(job, FakeEngine(), store=Flaky(store, 3), chunk_size=5, store_retry_s=20))
    assert events[-1].status == JobStatus.completed
    assert len(await store.done_ids(job.id)) == 15


async def test_a_store_down_past_the_bound_fails_the_job_and_a_rerun_resumes(store):
    job = make_job(10)
    events = await drain(run_job(job, FakeEngine(), store=Flaky(store, 10**6), chunk_size=5, store_retry_s=0.5))
    final = events[-1]
    assert final.status == JobStatus.failed and "store unreachable" in final.summary.reason
    assert not [e for e in events if isinstance(e, ChunkEvent)]  # nothing yielded that was not stored
    again = FakeEngine()
    events = await drain(run_job(job, again, store=store))
    assert events[-1].status == JobStatus.completed and len(again.started) == 10


async def test_finish_survives_cancellation_of_the_consumer(store):
    job = make_job(6)

    async def consume():
        async for _ in run_job(job, FakeEngine(capacity=1, delay=lambda r: 30), store=store):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert (await store.get_job(job.id)).status == JobStatus.cancelled
    assert await store.done_ids(job.id) == {}
