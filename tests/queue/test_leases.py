"""Leases (docs/architecture.md, "Leases"): each reservation is its own lease, and a worker's
heartbeat is never starved by the work of preparing a job. Through the real queue (upstash-redis ->
adapter -> redis-server), a real SQLite store and the fake engine."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import handler.runner
from handler.worker import Worker
from shared.contracts.models import JobStatus
from shared.contracts.prepare import RequestBuilder
from shared.stores.sqlite import SQLiteStore
from tests.conftest import make_job, make_queue
from tests.fakes import FakeEngine

# ## One token per reservation


async def test_a_lease_reserved_again_by_the_same_worker_is_a_new_lease(queue):
    await queue.enqueue(make_job(1, id="j"))
    old = await queue.reserve("w", lease_s=0.3)
    await asyncio.sleep(0.5)
    assert await queue.reap() == (1, 0)
    new = await queue.reserve("w", lease_s=30)  # the same worker id takes it again
    assert new.job.id == "j" and new.attempt == 2
    assert await queue.extend(old, 30) is False  # the expired lease is nobody's now
    assert await queue.ack(old) is False
    assert await queue.nack(old, "late") == "lost"
    assert await queue.nack(old, "late", release=True) == "lost"
    assert await queue.extend(new, 30) is True  # the fresh lease is untouched by the old one
    assert (await queue.stats())["running"] == 1
    assert await queue.ack(new) is True
    assert new.token != old.token


async def test_an_expired_lease_cannot_settle_a_fresh_one_held_by_the_same_worker(queue):
    await queue.enqueue(make_job(1, id="j"))
    old = await queue.reserve("w", lease_s=0.3)
    await asyncio.sleep(0.5)
    await queue.reap()
    new = await queue.reserve("w", lease_s=30)
    assert await queue.nack(old, "late", dead_letter=True) == "lost"
    assert await queue.dead() == []
    assert await queue.nack(new, "boom", dead_letter=True) == "dead"


# ## The heartbeat is never starved


class _Reaper:
    """Another worker, on its own event loop in its own thread: it reaps every 50 ms, as every
    worker does on each loop, and counts the leases it found expired."""

    def __init__(self, upstash):
        self.upstash = upstash
        self.requeued = 0
        self.dead = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)

    async def _run(self) -> None:
        q = make_queue(self.upstash)
        try:
            while not self._stop.is_set():
                requeued, dead = await q.reap()
                self.requeued, self.dead = self.requeued + requeued, self.dead + dead
                await asyncio.sleep(0.05)
        finally:
            await q.close()

    def __enter__(self) -> _Reaper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _slow_builder_for(*args, **kw):
    time.sleep(2.0)  # CPU-bound preparation of a big job (validation, templates), 2 s in one go
    return _builder_for(*args, **kw)


_builder_for = handler.runner.builder_for
_build = RequestBuilder.build


def _slow_build(self, item):
    time.sleep(1.6)  # a heavy (but legal) template, rendered for one item: longer than the lease
    return _build(self, item)


@pytest.mark.parametrize("slow", ["builder_for", "build"])
async def test_slow_preparation_never_starves_the_heartbeat(queue, upstash, tmp_path, monkeypatch, slow):
    if slow == "builder_for":
        monkeypatch.setattr(handler.runner, "builder_for", _slow_builder_for)
    else:
        monkeypatch.setattr(RequestBuilder, "build", _slow_build)
    store = SQLiteStore(tmp_path / "jobs.db")
    await queue.enqueue(make_job(2, id="big"))
    worker = Worker(FakeEngine(capacity=1), queue, store, drain=True, lease_s=1.2, poll_min_s=0.05,
                    poll_max_s=0.2)
    with _Reaper(upstash) as reaper:
        stats = await asyncio.wait_for(worker.run(), timeout=30)
    assert (reaper.requeued, reaper.dead) == (0, 0)  # the lease never expired
    assert stats.done == 1 and stats.failed == 0
    assert (await queue.stats())["running"] == 0
    assert (await queue.dead()) == []
    rec = await store.get_job("big")
    assert (rec.status, rec.completed) == (JobStatus.completed, 2)
    await store.close()


async def test_parsing_a_big_job_never_starves_the_heartbeat_of_a_running_one(queue, upstash, tmp_path,
                                                                               monkeypatch):
    from shared.contracts.models import Job

    parse = Job.model_validate_json

    def slow_parse(cls, doc, **kw):
        if '"huge"' in doc:
            time.sleep(2.0)  # a big job document, parsed when it is reserved
        return parse(doc, **kw)

    monkeypatch.setattr(Job, "model_validate_json", classmethod(slow_parse))
    store = SQLiteStore(tmp_path / "jobs.db")
    await queue.enqueue(make_job(12, id="running", chunk_size=1))
    busy = Worker(FakeEngine(capacity=1, delay=lambda r: 0.25), queue, store, worker_id="busy", drain=True,
                  lease_s=1.2, poll_min_s=0.05, poll_max_s=0.2)
    other = Worker(FakeEngine(), queue, store, worker_id="other", drain=True, lease_s=10, poll_min_s=0.05,
                   poll_max_s=0.2)  # another worker on the same event loop (as a second slot would be)
    with _Reaper(upstash) as reaper:
        first = asyncio.create_task(busy.run())
        while not await queue.events("running"):
            await asyncio.sleep(0.02)
        await queue.enqueue(make_job(3, id="huge"))
        stats = await asyncio.wait_for(asyncio.gather(first, other.run()), timeout=30)
    assert (reaper.requeued, reaper.dead) == (0, 0)  # no lease ever expired
    assert sum(s.done for s in stats) == 2 and sum(s.failed for s in stats) == 0
    for job_id, total in (("running", 12), ("huge", 3)):
        rec = await store.get_job(job_id)
        assert (rec.status, rec.completed) == (JobStatus.completed, total)
    await store.close()
