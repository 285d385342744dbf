"""The drain worker with the real queue (upstash-redis -> adapter -> redis-server), a real SQLite
store and the fake engine. tests/integration/test_worker_faults.py repeats the faults on the
real engine with Postgres."""

from __future__ import annotations

import asyncio

from handler.worker import Worker
from shared.contracts.errors import EngineDeadError
from shared.contracts.events import ChunkEvent, ErrorEvent, FinalEvent, Outcome
from shared.contracts.models import JobStatus
from shared.stores.sqlite import SQLiteStore
from tests.conftest import make_job
from tests.fakes import FakeEngine


def make_worker(engine, queue, store, **kw) -> Worker:
    return Worker(engine, queue, store, poll_min_s=0.05, poll_max_s=0.2, lease_s=kw.pop("lease_s", 5), **kw)


async def test_drain_runs_every_job_then_exits(queue, tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    for i in range(3):
        await queue.enqueue(make_job(7, id=f"j{i}"))
    stats = await make_worker(FakeEngine(), queue, store, drain=True, concurrency=2).run()
    assert stats.done == 3
    for i in range(3):
        rec = await store.get_job(f"j{i}")
        assert (rec.status, rec.completed) == (JobStatus.completed, 7)
        events = await queue.events(f"j{i}")
        assert events[-1].event.type == "final" and events[-1].event.status == "completed"
        assert sum(len(e.event.results) for e in events if isinstance(e.event, ChunkEvent)) == 7
    assert (await queue.stats())["running"] == 0
    await store.close()


async def test_cancel_is_observed_at_the_next_chunk(queue, tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    await queue.enqueue(make_job(50, id="long", chunk_size=1))
    engine = FakeEngine(capacity=1, delay=lambda r: 0.05)
    worker = make_worker(engine, queue, store, drain=True)
    task = asyncio.create_task(worker.run())
    while not await queue.events("long"):
        await asyncio.sleep(0.02)
    await queue.cancel("long")
    stats = await task
    assert stats.cancelled == 1 and len(engine.started) < 50
    rec = await store.get_job("long")
    assert rec.status == JobStatus.cancelled and rec.completed < 50
    events = await queue.events("long", count=1000)
    assert events[-1].event.status == "cancelled"
    final = events[-1].event
    assert isinstance(final, FinalEvent) and final.outcome is Outcome.cancelled
    assert final.summary.reason == "cancelled" and final.summary.total == 50
    assert final.summary.completed == rec.completed  # the summary counts what was stored
    assert [type(e.event) for e in events].count(FinalEvent) == 1
    assert await queue.reserve("w", 5) is None  # acked: not retried
    await store.close()


class DyingEngine(FakeEngine):
    """Engine work for this job raises every time; the engine itself stays alive."""

    alive = True

    async def complete(self, request):
        raise EngineDeadError("CUDA error: an illegal memory access was encountered")


async def test_a_job_that_always_fails_is_dead_lettered_after_max_attempts(queue, tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    await queue.enqueue(make_job(3, id="poison"))
    stats = await make_worker(DyingEngine(), queue, store, drain=True, store_retry_s=1).run()
    assert stats.failed == 3 and stats.dead_lettered == 1
    (dead,) = await queue.dead()
    assert dead["id"] == "poison" and "illegal memory access" in dead["last_error"] and dead["attempts"] == "3"
    rec = await store.get_job("poison")
    assert rec.status == JobStatus.failed and "illegal memory access" in rec.error
    # attempts 1 and 2 were retried: not over, so no final event; the dead letter ends it, once
    finals = [e.event for e in await queue.events("poison") if isinstance(e.event, FinalEvent)]
    assert len(finals) == 1 and finals[0].outcome is Outcome.failed
    await store.close()


async def test_a_failed_attempt_that_will_be_retried_waits_as_queued(queue, tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    job = make_job(2, id="flaky")
    await store.accept(job)
    await queue.enqueue(job)
    worker = make_worker(DyingEngine(), queue, store, store_retry_s=1)
    lease = await queue.reserve(worker.worker_id, 30)
    await worker._process(lease)
    rec = await store.get_job("flaky")
    assert rec.status == JobStatus.queued and "will retry" in rec.summary.reason  # not failed: it runs again
    assert (await queue.stats())["retrying"] == 1
    assert not [e for e in await queue.events("flaky") if isinstance(e.event, FinalEvent)]
    await store.close()


async def test_an_invalid_job_is_dead_lettered_at_once(queue, tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    job = make_job(2, id="wrong-model", model="gpt-9")
    await store.accept(job)  # the API accepted it: it cannot know the engine's models
    await queue.enqueue(job)
    stats = await make_worker(FakeEngine(), queue, store, drain=True).run()
    assert stats.dead_lettered == 1 and stats.failed == 0
    (dead,) = await queue.dead()
    assert dead["attempts"] == "1" and "gpt-9" in dead["last_error"]
    events = [e.event for e in await queue.events("wrong-model")]
    assert [type(e) for e in events] == [ErrorEvent, FinalEvent]  # readers learn why, then that it ended
    assert "gpt-9" in events[0].error and events[0].job_id == "wrong-model"
    assert events[1].outcome is Outcome.failed and events[1].summary.reason.startswith("invalid job")
    rec = await store.get_job("wrong-model")  # nothing ran, and it ended: failed, with the reason
    assert rec.status == JobStatus.failed and "gpt-9" in rec.error and await store.done_ids("wrong-model") == {}
    await store.close()


async def test_stop_hands_the_job_back_and_another_worker_resumes_it(queue, tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    await queue.enqueue(make_job(40, id="handoff", chunk_size=2))
    first_engine = FakeEngine(capacity=2, delay=lambda r: 0.02)
    first = make_worker(first_engine, queue, store, lease_s=60)
    task = asyncio.create_task(first.run())
    while len(await store.done_ids("handoff")) < 6:
        await asyncio.sleep(0.02)
    first.stop()
    stats = await asyncio.wait_for(task, 5)
    assert stats.released == 1
    assert (await store.get_job("handoff")).status == JobStatus.queued
    handed_back = [e.event for e in await queue.events("handoff", count=1000)]
    assert handed_back and not any(isinstance(e, FinalEvent) for e in handed_back)  # not over: no final
    assert (await queue.stats())["running"] == 0 and await queue.waiting() == 1  # back in the queue at once
    stored = await store.done_ids("handoff")
    second_engine = FakeEngine()
    stats = await make_worker(second_engine, queue, store, drain=True, lease_s=60).run()
    assert stats.done == 1  # picked up at once: no lease to wait out
    assert not set(second_engine.started) & set(stored)
    rec = await store.get_job("handoff")
    assert (rec.status, rec.completed) == (JobStatus.completed, 40)
    finals = [e.event for e in await queue.events("handoff", count=1000) if isinstance(e.event, FinalEvent)]
    assert [f.outcome for f in finals] == [Outcome.completed]  # the one final, from the run that finished
    await store.close()


async def test_an_engine_killed_by_the_same_signal_hands_the_job_back(queue, tmp_path):
    # Ctrl-C reaches vLLM's engine processes too: the job fails, but it is not the job's fault
    store = SQLiteStore(tmp_path / "jobs.db")
    await queue.enqueue(make_job(4, id="ctrl-c"))
    started = asyncio.Event()

    class DiesOnStop(FakeEngine):
        async def complete(self, request):
            started.set()
            await asyncio.sleep(0.3)
            raise EngineDeadError("EngineCore encountered an issue")

    worker = make_worker(DiesOnStop(), queue, store, lease_s=60)
    task = asyncio.create_task(worker.run())
    await started.wait()
    worker.stop()
    stats = await asyncio.wait_for(task, 5)
    assert (stats.released, stats.failed) == (1, 0)
    lease = await queue.reserve("next", 30)
    assert lease.job.id == "ctrl-c" and lease.attempt == 1
    await store.close()


async def test_a_worker_that_lost_its_lease_stops_and_records_nothing(queue, redis_server, tmp_path):
    import redis

    store = SQLiteStore(tmp_path / "jobs.db")
    await queue.enqueue(make_job(30, id="stolen", chunk_size=1))
    worker = make_worker(FakeEngine(capacity=1, delay=lambda r: 0.05), queue, store, lease_s=0.6)
    task = asyncio.create_task(worker.run())
    while not await store.done_ids("stolen"):
        await asyncio.sleep(0.02)
    with redis.Redis.from_url(redis_server.url) as r:  # as if reaped and handed to another worker
        r.zrem("llmjobs:processing", "stolen")
    await asyncio.sleep(1.0)  # the next heartbeat (every 0.2 s) finds the lease gone
    stored = len(await store.done_ids("stolen"))
    await asyncio.sleep(0.5)
    assert len(await store.done_ids("stolen")) == stored < 30  # it stopped working on the job
    worker.stop()
    stats = await asyncio.wait_for(task, 5)
    assert (stats.done, stats.failed, stats.cancelled) == (0, 0, 0)
    rec = await store.get_job("stolen")
    assert rec.status == JobStatus.running and rec.completed < 30  # left as the new owner will find it
    assert not any(isinstance(e.event, FinalEvent) for e in await queue.events("stolen", count=1000))
    await store.close()


async def test_a_job_waiting_for_its_retry_can_be_cancelled_and_never_runs_again(queue, tmp_path):
    from shared.contracts.settings import Settings
    from shared.server.dispatch import QueueDispatcher
    from shared.server.lifecycle import JobLifecycle

    store = SQLiteStore(tmp_path / "jobs.db")
    jobs = JobLifecycle(store, QueueDispatcher(queue), Settings(_env_file=None))
    await jobs.submit(make_job(2, id="retrying"))
    worker = make_worker(DyingEngine(), queue, store, store_retry_s=1)
    await worker._process(await queue.reserve(worker.worker_id, 30))  # attempt 1 fails: a retry is pending
    assert (await queue.stats())["retrying"] == 1

    done = await jobs.cancel("retrying")
    assert done.stopped_before_start and done.record.status == JobStatus.cancelled
    assert await queue.is_cancelled("retrying") and (await queue.stats())["retrying"] == 0
    await asyncio.sleep(0.5)  # past the test queue's retry backoff
    assert await queue.reserve("another", 30) is None  # attempts 2 and 3 never run
    await store.close()
