"""How the event stream paces itself (issue 13, item 4): it looks every SSE_POLL_S for SSE_IDLE_AFTER_S after the
stream opens, the job begins, or an event comes, every SSE_IDLE_POLL_S once nothing has (a job still queued, or
quiet), and the local dispatcher's events wake it at once. These check the choices, with a fake clock; the
timings are measured by benchmarks/sse_latency.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import httpx

from shared.contracts.events import ChunkEvent, FinalEvent, Outcome, ProgressEvent
from shared.contracts.models import JobRecord, JobStatus, Progress, Summary
from shared.contracts.settings import Settings
from shared.server.api import create_app
from shared.server.events import MemoryEvents, StreamEvent, follow
from shared.server.lifecycle import JobLifecycle
from shared.stores.sqlite import SQLiteStore
from testkit.serve import LoopServer
from tests.conftest import make_job
from tests.fakes import RecordingDispatcher

FAST, IDLE, IDLE_AFTER = 0.05, 1.0, 10.0


def chunk(job_id: str, seq: int) -> ChunkEvent:
    progress = Progress(total=100, completed=seq, failed=0, percentage=seq, elapsed_s=1.0, eta_s=None,
                        items_per_s=1.0, tokens_per_s=1.0)
    return ChunkEvent(job_id=job_id, seq=seq, results=[], progress=progress)


class FakeTime:
    """A clock that only moves when `follow` sleeps; every sleep is recorded with when it began."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[tuple[float, float]] = []  # (when, how long)

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.sleeps.append((self.now, s))
        self.now += s

    def chosen(self, start: float, end: float) -> set[float]:
        """The intervals chosen by sleeps that began in [start, end)."""
        return {s for t, s in self.sleeps if start <= t < end}


class ScriptedStore:
    """The job's status (and counters) as a function of the fake time; every look is noted."""

    def __init__(self, fake: FakeTime, status_at, done_at=lambda t: 0) -> None:
        self.fake, self.status_at, self.done_at = fake, status_at, done_at
        self.looks: list[float] = []

    async def get_job(self, job_id: str) -> JobRecord:
        t = self.fake.now
        self.looks.append(t)
        status = self.status_at(t)
        return JobRecord(id=job_id, status=status, total=100, completed=self.done_at(t), failed=0,
                         summary=Summary.empty(100) if status.terminal else None)


class ScriptedQueue:
    """A polled source like QueueEvents (no `wait`, pages of 100): events published at given times."""

    page = 100

    def __init__(self, fake: FakeTime, published: list[float]) -> None:
        self.fake, self.published = fake, published
        self.reads: list[float] = []

    async def after(self, job_id: str, last_id: str | None) -> list[StreamEvent]:
        self.reads.append(self.fake.now)
        start = int(last_id) if last_id else 0
        return [StreamEvent(str(i + 1), chunk(job_id, i + 1)) for i, t in enumerate(self.published)
                if i >= start and t <= self.fake.now]


def queued_running_completed(t: float) -> JobStatus:
    return JobStatus.queued if t < 13 else JobStatus.running if t < 40 else JobStatus.completed


async def test_a_polled_source_is_read_fast_only_while_something_is_likely_to_come():
    fake = FakeTime()
    store = ScriptedStore(fake, queued_running_completed)
    # queued until 13; events every 0.5 s from 13.5 to 18, then quiet until one at 35; done at 40
    queue = ScriptedQueue(fake, [13.5 + 0.5 * i for i in range(10)] + [35.0])
    got = [ev async for ev in follow(queue, store, "j", None, poll_s=FAST, idle_poll_s=IDLE, idle_after_s=IDLE_AFTER,
                                     clock=fake.clock, sleep=fake.sleep)]

    assert [ev.id for ev in got] == [str(i) for i in range(1, 12)] + ["final"]
    assert fake.chosen(0, 9.9) == {FAST}  # the stream just opened: the job may begin at any moment
    assert fake.chosen(10.1, 12.9) == {IDLE}  # still queued 10 s on
    assert fake.chosen(13.1, 27.9) == {FAST}  # it began running, then events kept coming until 18
    assert fake.chosen(28.1, 34.9) == {IDLE}  # running, but nothing for 10 s
    assert fake.chosen(35.1, 39.9) == {FAST}  # events again
    # one read a look: about 1 / SSE_POLL_S reads a second while fast, 1 / SSE_IDLE_POLL_S while idle
    assert 18 <= sum(15 <= t < 25 for t in queue.reads) / 10 <= 21
    assert sum(29 <= t < 34 for t in queue.reads) / 5 <= 1.2
    # the store is looked at once a second at most, however fast the queue is read
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(store.looks, store.looks[1:], strict=False))
    assert len(store.looks) <= 42


async def test_a_polled_source_wakes_up_fast_when_the_store_says_the_job_began():
    fake = FakeTime()
    store = ScriptedStore(fake, queued_running_completed)
    queue = ScriptedQueue(fake, [])
    got = [ev async for ev in follow(queue, store, "j", None, poll_s=FAST, idle_poll_s=IDLE, idle_after_s=IDLE_AFTER,
                                     clock=fake.clock, sleep=fake.sleep)]
    assert [ev.id for ev in got] == ["final"]
    assert fake.chosen(0, 9.9) == {FAST}
    assert fake.chosen(10.1, 12.9) == {IDLE}
    assert fake.chosen(13.1, 22.9) == {FAST}  # its first events are close: fast for SSE_IDLE_AFTER_S
    assert fake.chosen(23.1, 40) == {IDLE}  # none came


async def test_with_no_source_the_store_is_the_stream_on_the_same_pace():
    fake = FakeTime()
    # queued until 13, then the counters move every 0.5 s until 18, then nothing until 35, done at 40
    def done(t: float) -> int:
        return 0 if t < 13.5 else min(10, int((t - 13.5) / 0.5) + 1) + (t >= 35)

    store = ScriptedStore(fake, queued_running_completed, done)
    got = [ev async for ev in follow(None, store, "j", None, poll_s=FAST, idle_poll_s=IDLE, idle_after_s=IDLE_AFTER,
                                     clock=fake.clock, sleep=fake.sleep)]

    assert [ev.id for ev in got] == ["p0", *(f"p{n}" for n in range(1, 12)), "final"]
    assert all(isinstance(ev.event, ProgressEvent) for ev in got[:-1])
    assert fake.chosen(0, 9.9) == {FAST}
    assert fake.chosen(10.1, 12.9) == {IDLE}
    assert fake.chosen(13.1, 27.9) == {FAST}
    assert fake.chosen(28.1, 34.9) == {IDLE}
    assert fake.chosen(35.1, 39.9) == {FAST}
    assert len(store.looks) == len(fake.sleeps) + 1  # the store is looked at each time: it is the stream


class Silent(RecordingDispatcher):
    """Accepts jobs and runs nothing: the test publishes their events."""

    async def submit(self, refs) -> None: ...


async def test_the_local_dispatchers_events_reach_an_sse_client_at_once_whatever_the_pace(tmp_path):
    # paced at 30 s whatever the job does: only a wake-up brings the events within the 5 s allowed
    settings = Settings(_env_file=None, rate_limit_per_minute=0, sse_poll_s=30, sse_idle_poll_s=30)
    store = SQLiteStore(tmp_path / "sse.db")
    dispatcher = Silent()
    async with LoopServer(create_app(settings, store=store, dispatcher=dispatcher)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            r = await client.post("/v1/jobs", json=make_job(2, id="wake").wire())
            assert r.status_code == 202
            ids: list[str] = []
            seen = asyncio.Event()

            async def read() -> None:
                async with client.stream("GET", "/v1/jobs/wake/events") as r:
                    async for line in r.aiter_lines():
                        if line.startswith("id: "):
                            ids.append(line[4:])
                            seen.set()

            reader = asyncio.create_task(read())
            await asyncio.sleep(0.5)  # the stream is open, and waiting
            assert ids == []
            dispatcher.events.publish("wake", chunk("wake", 1))
            async with asyncio.timeout(5):
                await seen.wait()
            dispatcher.events.publish("wake", FinalEvent(job_id="wake", outcome=Outcome.completed,
                                                         summary=Summary.empty(2)))
            async with asyncio.timeout(5):
                await reader
            assert ids == ["1", "2"]
    await store.close()


async def test_an_event_published_from_another_thread_wakes_the_follower():
    events = MemoryEvents()
    store = ScriptedStore(FakeTime(), lambda t: JobStatus.running)
    got: list[str] = []

    async def read() -> None:
        async for ev in follow(events, store, "j", None, poll_s=30, idle_poll_s=30, idle_after_s=10):
            got.append(ev.id)

    def publish() -> None:
        time.sleep(0.2)  # the loop is asleep by then, waiting for its next timer (30 s away)
        events.publish("j", chunk("j", 1))
        events.publish("j", FinalEvent(job_id="j", outcome=Outcome.completed, summary=Summary.empty(2)))

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.2)  # it waits now
    thread = threading.Thread(target=publish)
    thread.start()  # nothing else wakes the loop here: only the publisher can, within the 5 s
    async with asyncio.timeout(5):
        await reader
    thread.join()
    assert got == ["1", "2"]


async def test_an_event_published_between_two_looks_is_not_waited_for():
    events = MemoryEvents()
    events.publish("j", chunk("j", 1))
    async with asyncio.timeout(5):
        await events.wait("j", None, 30)  # one is there already: at once
        await events.wait("j", "0", 30)
    waited = asyncio.create_task(events.wait("j", "1", 30))
    await asyncio.sleep(0.05)
    assert not waited.done()
    events.publish("j", chunk("j", 2))
    async with asyncio.timeout(5):
        await waited


class CountingSource:
    """A polled source that never has an event: it counts the reads."""

    def __init__(self) -> None:
        self.reads = 0

    async def after(self, job_id: str, last_id: str | None) -> list[StreamEvent]:
        self.reads += 1
        return []


async def reads_in(settings: Settings, status: JobStatus, seconds: float = 0.5) -> int:
    source = CountingSource()
    lifecycle = JobLifecycle(ScriptedStore(FakeTime(), lambda t: status), SimpleNamespace(events=source), settings)
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + seconds

    async def stop() -> bool:
        return loop.time() >= stop_at

    async for _ in lifecycle.follow("j", stop=stop):
        pass
    return source.reads


async def test_the_lifecycle_follows_with_the_settings_idle_pace():
    base = Settings(_env_file=None, sse_poll_s=0.01)
    # a fresh stream is fast for SSE_IDLE_AFTER_S (the default, 10 s, covers the half second), queued or not
    assert await reads_in(base, JobStatus.queued) >= 10
    # past it, a queued job is read at SSE_IDLE_POLL_S: the default (1 s) gives one read in half a second
    waited = base.model_copy(update={"sse_idle_after_s": 0})
    assert await reads_in(waited, JobStatus.queued) <= 2
    assert await reads_in(waited.model_copy(update={"sse_idle_poll_s": 0.01}), JobStatus.queued) >= 10
    # a running job with no event goes idle after SSE_IDLE_AFTER_S: the default (10 s) keeps it fast
    assert await reads_in(base, JobStatus.running) >= 10
    quiet = base.model_copy(update={"sse_idle_after_s": 0, "sse_idle_poll_s": 0.6})
    assert await reads_in(quiet, JobStatus.running) <= 2
