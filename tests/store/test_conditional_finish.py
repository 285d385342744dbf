"""`finish(if_open=True)`: the outcome of a job of several shards is recorded once (handler/rollup.py).
One conditional UPDATE in the database: of two callers racing, exactly one writes and gets True; a
job that has ended already is not touched. Run against SQLite, Postgres and Supabase."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from shared.contracts.errors import StoreError
from shared.contracts.events import Outcome
from shared.contracts.models import Job, JobStatus, Summary
from shared.stores.base import record_outcome
from shared.stores.postgres import PostgresStore
from shared.stores.sqlite import SQLiteStore
from shared.stores.supabase import SupabaseStore
from testkit import SERVICE_KEY
from testkit.postgrest import PostgrestTransport


def summary(reason: str | None = None, completed: int = 1) -> Summary:
    return Summary.empty(3, reason).model_copy(update={"completed": completed})


async def running(store, job_id: str = "cf-1") -> str:
    await store.begin(Job(id=job_id, items=[]), total=3)
    return job_id


async def test_if_open_writes_an_open_job_once(store):
    job = await running(store)
    assert await store.finish(job, JobStatus.completed, summary("first"), if_open=True) is True
    first = await store.get_job(job)
    assert (first.status, first.summary.reason, first.error) == (JobStatus.completed, "first", "first")
    assert await store.finish(job, JobStatus.failed, summary("second", 0), if_open=True) is False
    again = await store.get_job(job)  # not touched: status, summary, finished_at
    assert (again.status, again.summary, again.finished_at) == (first.status, first.summary, first.finished_at)


async def test_a_queued_job_is_open(store):
    assert await store.accept(Job(id="cf-q", items=[]), total=2)
    assert await store.finish("cf-q", JobStatus.cancelled, summary("gone"), if_open=True) is True
    assert (await store.get_job("cf-q")).status == JobStatus.cancelled


async def test_without_if_open_it_writes_when_the_job_exists(store):
    job = await running(store)
    assert await store.finish(job, JobStatus.cancelled, summary("one")) is True
    assert await store.finish(job, JobStatus.failed, summary("two")) is True  # over a terminal job too
    assert (await store.get_job(job)).status == JobStatus.failed
    assert await store.finish("cf-none", JobStatus.failed, summary()) is False
    assert await store.finish("cf-none", JobStatus.failed, summary(), if_open=True) is False
    assert await store.get_job("cf-none") is None


async def _twin(store, tmp_path):
    """A second store over the same database (its own connection): the other racer."""
    if isinstance(store, SQLiteStore):
        return SQLiteStore(store.path, timeout_s=5), None
    if isinstance(store, PostgresStore):
        return PostgresStore(store._pool.conninfo, timeout_s=5), None
    transport = PostgrestTransport(store._transport.pool.conninfo, SERVICE_KEY)
    return SupabaseStore("http://supabase.test", SERVICE_KEY, transport=transport, timeout_s=5), transport


async def test_two_racing_callers_exactly_one_wins(store, tmp_path):
    other, transport = await _twin(store, tmp_path)
    try:
        for n in range(8):
            job = await running(store, f"race-{n}")
            outcomes = [JobStatus.completed, JobStatus.failed]
            got = await asyncio.gather(
                store.finish(job, outcomes[0], summary("a"), if_open=True),
                other.finish(job, outcomes[1], summary("b"), if_open=True))
            assert sorted(got) == [False, True], got
            rec = await store.get_job(job)
            assert rec.status == outcomes[got.index(True)]  # the winner's outcome, whole
            assert rec.summary.reason == "ab"[got.index(True)]
    finally:
        await other.close()
        if transport is not None:
            await transport.aclose()


async def test_racers_queued_on_the_row_lock_still_write_once(store, tmp_path, request):
    # the tightest race: both UPDATEs wait on the row's lock, then run one after the other; the
    # second must re-check the status on the row as the first left it
    if isinstance(store, SQLiteStore):
        pytest.skip("SQLite has one writer at a time: the race above covers it")
    pg = request.getfixturevalue("pg")
    other, transport = await _twin(store, tmp_path)
    try:
        job = await running(store, "race-locked")
        async with await psycopg.AsyncConnection.connect(pg.url) as holder:
            async with holder.transaction():
                await holder.execute("select 1 from jobs where id = %s for update", (job,))
                racers = [asyncio.create_task(s.finish(job, st, summary(st.value), if_open=True))
                          for s, st in ((store, JobStatus.completed), (other, JobStatus.cancelled))]
                await asyncio.sleep(0.5)
                assert not any(t.done() for t in racers)  # both wait for the lock
            got = await asyncio.gather(*racers)
        assert sorted(got) == [False, True]
        rec = await store.get_job(job)
        assert rec.status == (JobStatus.completed, JobStatus.cancelled)[got.index(True)]
    finally:
        await other.close()
        if transport is not None:
            await transport.aclose()


async def test_record_outcome_passes_if_open_through(store):
    job = await running(store, "ro-1")
    assert await record_outcome(store, job, Outcome.completed, summary(), retry_s=1, if_open=True) is True
    assert await record_outcome(store, job, Outcome.failed, summary("late"), retry_s=1, if_open=True) is False
    assert (await store.get_job(job)).status == JobStatus.completed
    assert await record_outcome(store, job, Outcome.cancelled, summary(), retry_s=1) is True  # as before
    assert (await store.get_job(job)).status == JobStatus.cancelled


async def test_record_outcome_is_false_when_the_store_refuses():
    class Refusing:
        async def finish(self, job_id, status, summary, *, if_open=False):
            raise StoreError("no")

    class Legacy:  # a store whose finish says nothing (None): as before, True
        async def finish(self, job_id, status, summary):
            return None

    assert await record_outcome(Refusing(), "j", Outcome.completed, summary(), retry_s=0.1, if_open=True) is False
    assert await record_outcome(Refusing(), "j", Outcome.completed, summary(), retry_s=0.1) is False
    assert await record_outcome(Legacy(), "j", Outcome.completed, summary(), retry_s=0.1) is True


async def test_supabase_sends_one_filtered_patch(pg, postgrest):
    pg.truncate()
    sb = SupabaseStore("http://supabase.test", SERVICE_KEY, transport=postgrest, timeout_s=5)
    try:
        job = await running(sb, "wire-1")
        postgrest.log.clear()
        assert await sb.finish(job, JobStatus.completed, summary(), if_open=True)
        (req,) = postgrest.log
        assert (req.method, req.path) == ("PATCH", "/rest/v1/jobs")
        assert req.params["id"] == f"eq.{job}" and req.params["status"] == "in.(queued,running)"
        assert "return=representation" in req.headers["prefer"]
    finally:
        await sb.close()
