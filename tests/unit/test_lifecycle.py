"""JobLifecycle (shared/server/lifecycle.py): submit, get, list, results, follow and cancel, on a real
SQLite store with a dispatcher that only records what it is asked to do."""

from __future__ import annotations

import asyncio

import pytest

from shared.contracts.errors import ConfigError, NotFound, QueueUnavailable
from shared.contracts.events import ChunkEvent, FinalEvent, Outcome, ProgressEvent
from shared.contracts.models import JobStatus, Result, ResultStatus, Summary
from shared.contracts.settings import Settings
from shared.server.events import MemoryEvents
from shared.server.lifecycle import JobLifecycle
from shared.stores.sqlite import SQLiteStore
from tests.conftest import make_job
from tests.fakes import chunk_event


class Recorder:
    """Records submits and cancels; runs nothing. `cancel` answers `stops_queued` (none of the job runs any
    more: the queue removed what waited)."""

    name = "recorder"

    def __init__(self, *, events: bool = True, stops_queued: bool = True) -> None:
        self.events = MemoryEvents() if events else None
        self.submitted: list[str] = []
        self.cancelled: list[str] = []
        self.stops_queued = stops_queued
        self.closed = False

    def check(self, ref) -> None: ...

    async def submit(self, refs) -> None:
        self.submitted.append(refs[0].job_id)

    async def cancel(self, job_id: str) -> bool:
        self.cancelled.append(job_id)
        return self.stops_queued

    async def ready(self) -> dict:
        return {}

    async def close(self) -> None:
        self.closed = True


SETTINGS = Settings(_env_file=None, sse_poll_s=0.02, store_retry_s=2)


@pytest.fixture
async def store(tmp_path):
    s = SQLiteStore(tmp_path / "jobs.db")
    yield s
    await s.close()


def ok(cid: str) -> Result:
    return Result(custom_id=cid, status=ResultStatus.ok, text="hi")


def summary(total: int, **kw) -> Summary:
    return Summary.empty(total).model_copy(update=kw)


async def test_submit_is_idempotent_on_the_job_id(store):
    dispatcher = Recorder()
    jobs = JobLifecycle(store, dispatcher, SETTINGS)
    job = make_job(3, id="same")
    first = await jobs.submit(job)
    assert (first.status, first.created, first.dispatched) == (JobStatus.queued, True, True)
    assert first.job is job
    again = await jobs.submit(job)
    assert (again.status, again.created, again.dispatched) == (JobStatus.queued, False, False)
    await store.begin(job)
    running = await jobs.submit(job)
    assert (running.status, running.created, running.dispatched) == (JobStatus.running, False, False)
    await store.finish("same", JobStatus.completed, summary(3, completed=3))
    done = await jobs.submit(job)
    assert (done.status, done.created, done.dispatched) == (JobStatus.completed, False, False)
    assert dispatcher.submitted == ["same"]  # dispatched once only
    record = await jobs.get("same")
    assert (record.status, record.total) == (JobStatus.completed, 3)


@pytest.mark.parametrize("ended", [JobStatus.failed, JobStatus.cancelled])
async def test_a_failed_or_cancelled_job_is_dispatched_again(store, ended):
    dispatcher = Recorder()
    jobs = JobLifecycle(store, dispatcher, SETTINGS)
    job = make_job(2, id="again")
    await jobs.submit(job)
    await store.finish("again", ended, summary(2, reason="boom"))
    rerun = await jobs.submit(job)
    assert (rerun.status, rerun.created, rerun.dispatched) == (JobStatus.queued, False, True)
    assert dispatcher.submitted == ["again", "again"]
    # waiting to run again, so a reader who follows it now waits for the new run's final event
    record = await jobs.get("again")
    assert record.status == JobStatus.queued and record.summary.reason.startswith("submitted again")


async def test_get_an_unknown_job_is_not_found(store):
    jobs = JobLifecycle(store, Recorder(), SETTINGS)
    with pytest.raises(NotFound):
        await jobs.get("nope")
    with pytest.raises(NotFound):
        await jobs.results("nope")
    with pytest.raises(NotFound):
        await jobs.cancel("nope")


async def test_list_is_newest_first_and_filters_by_status(store):
    jobs = JobLifecycle(store, Recorder(), SETTINGS)
    for name in ("b", "c", "a"):  # created in this order; the ids sort otherwise
        await jobs.submit(make_job(1, id=name))
        await asyncio.sleep(0.01)
    await store.begin(make_job(1, id="c"))
    assert [r.id for r in await jobs.list()] == ["a", "c", "b"]
    assert [r.id for r in await jobs.list(limit=2)] == ["a", "c"]
    assert [r.id for r in await jobs.list(status=JobStatus.queued)] == ["a", "b"]
    assert [r.id for r in await jobs.list(status=JobStatus.running)] == ["c"]
    assert await jobs.list(status=JobStatus.failed) == []


async def test_results_come_in_pages_with_a_cursor(store):
    jobs = JobLifecycle(store, Recorder(), SETTINGS)
    job = make_job(5, id="paged")
    await jobs.submit(job)
    await store.begin(job)
    await store.write("paged", [ok(f"c{i}") for i in range(5)])
    page, cursor = await jobs.results("paged", limit=2)
    seen = [r.custom_id for r in page]
    while cursor is not None:
        page, cursor = await jobs.results("paged", after=cursor, limit=2)
        seen += [r.custom_id for r in page]
    assert seen == [f"c{i}" for i in range(5)]
    page, cursor = await jobs.results("paged", limit=5)  # a full last page: one more (empty) page
    assert len(page) == 5 and cursor == "c4"
    assert await jobs.results("paged", after=cursor, limit=5) == ([], None)
    assert await jobs.results("paged", limit=100) == (page, None)


async def test_cancel_before_it_started_records_cancelled(store):
    dispatcher = Recorder(stops_queued=True)
    jobs = JobLifecycle(store, dispatcher, SETTINGS)
    await jobs.submit(make_job(4, id="early"))
    done = await jobs.cancel("early")
    assert done.stopped_before_start is True and dispatcher.cancelled == ["early"]
    assert done.record.status == JobStatus.cancelled
    assert done.record.summary.reason == "cancelled before it ran"
    assert (done.record.summary.total, done.record.summary.completed) == (4, 0)
    assert (await jobs.get("early")).status == JobStatus.cancelled


async def test_cancel_of_a_running_job_asks_it_to_stop_and_records_nothing(store):
    dispatcher = Recorder(stops_queued=False)  # the dispatcher says it still runs
    jobs = JobLifecycle(store, dispatcher, SETTINGS)
    job = make_job(4, id="busy")
    await jobs.submit(job)
    await store.begin(job)
    done = await jobs.cancel("busy")
    assert done.stopped_before_start is False and dispatcher.cancelled == ["busy"]
    assert done.record.status == JobStatus.running  # it stops at its next chunk and records that itself


@pytest.mark.parametrize("ended", [JobStatus.completed, JobStatus.failed, JobStatus.cancelled])
async def test_cancel_of_an_ended_job_changes_nothing(store, ended):
    dispatcher = Recorder()
    jobs = JobLifecycle(store, dispatcher, SETTINGS)
    await jobs.submit(make_job(2, id="over"))
    await store.finish("over", ended, summary(2, completed=2, reason="as it was"))
    before = await jobs.get("over")
    done = await jobs.cancel("over")
    assert done.stopped_before_start is False and done.record == before
    assert dispatcher.cancelled == []  # not even asked
    assert await jobs.get("over") == before


async def test_follow_ends_with_a_final_made_from_the_store(store):
    dispatcher = Recorder(events=True)
    jobs = JobLifecycle(store, dispatcher, SETTINGS)
    job = make_job(2, id="f")
    await jobs.submit(job)
    dispatcher.events.publish("f", chunk_event("f", 1, [ok("c0")], total=2))  # the runner died after this
    await store.begin(job)
    await store.write("f", [ok("c0")])
    stored = summary(2, completed=1, reason="engine died")
    await store.finish("f", JobStatus.failed, stored)
    got = [ev async for ev in jobs.follow("f")]
    assert [ev.id for ev in got] == ["1", "final"]
    assert isinstance(got[0].event, ChunkEvent)
    final = got[-1].event
    assert isinstance(final, FinalEvent) and final.job_id == "f"
    assert final.outcome is Outcome.failed and final.summary == stored
    assert [ev.id async for ev in jobs.follow("f", "1")] == ["final"]  # resumed after what was seen


async def test_follow_without_published_events_makes_progress_then_final_from_the_store(store):
    jobs = JobLifecycle(store, Recorder(events=False), SETTINGS)
    job = make_job(2, id="quiet")
    await jobs.submit(job)
    await store.begin(job)
    await store.write("quiet", [ok("c0"), ok("c1")])
    await store.finish("quiet", JobStatus.completed, summary(2, completed=2))
    got = [ev async for ev in jobs.follow("quiet")]
    assert [ev.id for ev in got] == ["p2", "final"]
    assert isinstance(got[0].event, ProgressEvent) and got[0].event.percentage == 100.0
    assert got[1].event.outcome is Outcome.completed and got[1].event.summary.completed == 2


async def test_follow_a_job_ended_with_no_summary_still_gives_a_summary(store):
    jobs = JobLifecycle(store, None, SETTINGS)
    job = make_job(3, id="bare")
    await store.accept(job)
    await store._run("update jobs set status = 'failed', error = 'lost' where id = ?", ("bare",))
    (final,) = [ev.event async for ev in jobs.follow("bare") if ev.id == "final"]
    assert final.outcome is Outcome.failed and final.summary.total == 3 and final.summary.reason == "lost"


async def test_a_reader_lifecycle_reads_but_cannot_submit_or_cancel(store):
    await store.accept(make_job(1, id="known"))
    reader = JobLifecycle(store, None, SETTINGS)
    assert (await reader.get("known")).status == JobStatus.queued
    assert [r.id for r in await reader.list()] == ["known"]
    with pytest.raises(ConfigError):
        await reader.submit(make_job(1, id="new"))
    with pytest.raises(ConfigError):
        await reader.cancel("known")
    await reader.close()  # closes the store only


async def test_a_reader_that_refuses_a_job_records_nothing(store):
    reader = JobLifecycle(store, None, SETTINGS)
    with pytest.raises(ConfigError):
        await reader.submit(make_job(1, id="new"))
    assert await store.get_job("new") is None


async def test_a_job_that_could_not_be_dispatched_is_failed_and_a_resubmit_dispatches_it(store):
    class Down(Recorder):
        async def submit(self, refs) -> None:
            raise QueueUnavailable("queue enqueue: no answer in 5 s")

    with pytest.raises(QueueUnavailable):
        await JobLifecycle(store, Down(), SETTINGS).submit(make_job(2, id="stranded"))
    record = await store.get_job("stranded")
    assert record.status == JobStatus.failed and "could not dispatch" in record.summary.reason
    up = Recorder()
    accepted = await JobLifecycle(store, up, SETTINGS).submit(make_job(2, id="stranded"))
    assert accepted.dispatched and not accepted.created and up.submitted == ["stranded"]


async def test_close_closes_the_dispatcher_and_the_store(tmp_path):
    dispatcher = Recorder()
    jobs = JobLifecycle(SQLiteStore(tmp_path / "c.db"), dispatcher, SETTINGS)
    await jobs.submit(make_job(1))
    await jobs.close()
    assert dispatcher.closed
