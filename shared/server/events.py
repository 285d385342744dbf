"""Where a job's events come from, for `GET /v1/jobs/{id}/events` and the SDK's local backend.

- QueueEvents: the job's capped Redis stream (Upstash), written by whichever worker runs it.
  Ids are the stream's ids, so `Last-Event-ID` resumes exactly after the last event seen.
- MemoryEvents: jobs this process runs itself (the local dispatcher); ids count up from 1. It keeps
  a short tail of each job's events, and only the final once the job has ended for a while.
- Both are capped: a reader whose place was dropped gets a `gap` event first (its id resumes
  after the gap), then the events still kept. Every result is in the store: it re-reads them.
- With neither (RunPod, Modal), the stream is made from the store: a `progress` event each time
  the job's counters move, then `final`. Results are read from /results (or Supabase Realtime).
In every case, once the store says the job ended, the stream ends with a `final` event.

How fast a reader gets an event (issue 13: under 100 ms at p95 from the chunk stored to the client,
measured by benchmarks/sse_latency.py; README, "Streaming latency"):
- MemoryEvents wakes its readers when an event is published: no polling, no delay.
- QueueEvents is polled (Upstash's REST API has no blocking read), at the pace `Pace` sets: every
  SSE_POLL_S (0.05 s) for SSE_IDLE_AFTER_S (10 s) after the stream opens, after the job is seen to
  begin, and after each event; once that long has passed with nothing new (a job still queued, or
  quiet), every SSE_IDLE_POLL_S (1 s). Each look is one Upstash command (an EVAL that runs the
  XRANGE and reads the trim mark, shared/queue/upstash.py `events`), however many events it brings
  (up to a page of 100; only a full page is followed by another look at once).
  At the defaults, one viewer of a running job costs about 1 / 0.05 = 20 commands a second (72,000
  an hour), whatever the chunk rate; a viewer of a job that stays queued about 200 in the stream's
  first 10 s, then 1 a second (3,600 an hour). Ten viewers of a job running for an hour: 720,000
  commands, about $1.44 at Upstash's pay-as-you-go $0.20 per 100,000. Besides, each viewer looks at
  the store (the job's status and its end) every max(STORE_LOOK_S, SSE_POLL_S) = 1 s: a store read,
  not an Upstash command.
  The price of the slow pace: a job that waited in the queue for over SSE_IDLE_AFTER_S after its
  stream opened is seen to begin (its first events, or the store saying `running`) up to
  SSE_IDLE_POLL_S late, so the results stored in that first moment can wait that long; from then
  on, SSE_POLL_S at most.
- With no source (RunPod, Modal), the store is looked at on that same schedule (0.05 s while the
  counters move, 1 s otherwise): the store is the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from shared.contracts.errors import LLMJobsError
from shared.contracts.events import Event, FinalEvent, GapEvent, Outcome, ProgressEvent
from shared.contracts.models import JobRecord, JobStatus, Summary
from shared.contracts.settings import DEFAULTS
from shared.queue.upstash import JobQueue
from shared.stores.base import Store

_STREAM_ID = re.compile(r"^\d+-\d+$")

#: seconds between looks at the store's record while a source delivers the events (status, the end)
STORE_LOOK_S = 1.0


@dataclass(frozen=True)
class StreamEvent:
    #: what a reader sends back as Last-Event-ID to resume after this event
    id: str
    event: Event


class EventSource(Protocol):
    async def after(self, job_id: str, last_id: str | None) -> list[StreamEvent]:
        """Events after `last_id` (all when None), oldest first; a `gap` first when some were dropped."""


async def wait_for_event(source: EventSource | None, job_id: str, last_id: str | None, within_s: float, *,
                         sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Sleep `within_s` seconds, or less where the source can say that an event after `last_id` came
    (MemoryEvents)."""
    wait = getattr(source, "wait", None)
    if wait is None:
        await sleep(within_s)
    else:
        await wait(job_id, last_id, within_s)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class QueueEvents:
    #: events read at most per look (one XRANGE); a full page is followed by another look at once
    page = 100

    def __init__(self, queue: JobQueue):
        self.queue = queue

    async def after(self, job_id: str, last_id: str | None) -> list[StreamEvent]:
        after = last_id if last_id and _STREAM_ID.match(last_id) else None
        return [StreamEvent(e.id, e.event) for e in await self.queue.events(job_id, after=after, count=self.page)]


class _Tail:
    """One job's last events; `count` is how many were ever published (the last one's id)."""

    __slots__ = ("count", "events")

    def __init__(self, maxlen: int) -> None:
        self.events: deque[Event] = deque(maxlen=maxlen)
        self.count = 0

    @property
    def dropped(self) -> int:
        """Events no longer kept; their ids are 1 to `dropped`."""
        return self.count - len(self.events)

    def __len__(self) -> int:
        return len(self.events)


class MemoryEvents:
    """Events of the jobs this process ran, the last `keep_jobs` of them (older ones: the store answers).

    Each job keeps its last `maxlen` events (EVENTS_MAXLEN), never the whole job. `grace_s` after
    its final event, a job keeps only that final. A reader behind what is kept gets a `gap` first.
    """

    def __init__(self, keep_jobs: int = 1000, *, maxlen: int = DEFAULTS.events_maxlen, grace_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.keep_jobs = keep_jobs
        self.maxlen = maxlen
        self.grace_s = grace_s
        self._clock = clock
        self._tails: dict[str, _Tail] = {}
        self._ended: OrderedDict[str, float] = OrderedDict()  # job id -> when its final came, oldest first
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}  # job id -> readers waiting for its next event

    def publish(self, job_id: str, event: Event) -> None:
        self._shrink_ended()
        tail = self._tails.get(job_id)
        if tail is None:
            tail = self._tails[job_id] = _Tail(self.maxlen)
            while len(self._tails) > self.keep_jobs:
                self.forget(next(iter(self._tails)))
        tail.events.append(event)
        tail.count += 1
        self._wake_readers(job_id)
        if isinstance(event, FinalEvent):
            self._ended[job_id] = self._clock()
            self._ended.move_to_end(job_id)
        else:
            self._ended.pop(job_id, None)  # running again

    def _wake_readers(self, job_id: str) -> None:
        """Wake the job's waiting readers. publish runs on the event loop (the dispatcher's tasks); a
        reader waiting on another loop (another thread) is woken through its own loop."""
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for waiter in self._waiting.pop(job_id, ()):
            loop = waiter.get_loop()
            if loop is here:
                _wake(waiter)
            elif not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # closed in between: nobody is waiting any more
                    loop.call_soon_threadsafe(_wake, waiter)

    async def wait(self, job_id: str, last_id: str | None, within_s: float) -> None:
        """Until the job has an event after `last_id` (at once if it has one already: published while
        the reader was elsewhere), or `within_s` seconds."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(job_id, set()).add(waiter)  # first: then no publish can come unseen
        try:
            tail = self._tails.get(job_id)
            if tail is not None and tail.count > (int(last_id) if last_id and last_id.isdigit() else 0):
                return
            async with asyncio.timeout(within_s):
                await waiter
        except TimeoutError:
            pass
        finally:
            waiting = self._waiting.get(job_id)
            if waiting is not None:
                waiting.discard(waiter)
                if not waiting:
                    del self._waiting[job_id]

    def forget(self, job_id: str) -> None:
        self._tails.pop(job_id, None)
        self._ended.pop(job_id, None)

    def _shrink_ended(self) -> None:
        """Jobs that ended more than `grace_s` ago keep only their final event."""
        now = self._clock()
        while self._ended:
            job_id, ended = next(iter(self._ended.items()))
            if now - ended < self.grace_s:
                return
            del self._ended[job_id]
            tail = self._tails.get(job_id)
            if tail is not None:
                while len(tail.events) > 1:
                    tail.events.popleft()

    async def after(self, job_id: str, last_id: str | None) -> list[StreamEvent]:
        self._shrink_ended()
        tail = self._tails.get(job_id)
        if tail is None:
            return []
        start = int(last_id) if last_id and last_id.isdigit() else 0
        dropped = tail.dropped
        out = [StreamEvent(str(i + 1), e) for i, e in enumerate(tail.events, start=dropped) if i >= start]
        if start < dropped:
            out.insert(0, StreamEvent(str(dropped), GapEvent(job_id=job_id, missed_after=last_id)))
        return out


def progress_event(record: JobRecord) -> ProgressEvent:
    return ProgressEvent.of(record.id, record.status, total=record.total, completed=record.completed,
                            failed=record.failed)


def final_event(record: JobRecord) -> FinalEvent:
    """The final event of a job the store says has ended (its summary, or one made from its counters)."""
    summary = record.summary or Summary.empty(record.total, record.error)
    return FinalEvent(job_id=record.id, outcome=Outcome.of(record.status), summary=summary)


async def never() -> bool:
    """A reader that never leaves (for `follow`'s `stop`)."""
    return False


@dataclass
class Pace:
    """How often `follow` looks: fast while something is likely to come, slow otherwise.

    Fast (`poll_s`) for `idle_after_s` after the stream opens, after the job is seen to begin, and
    after each event; slow (`idle_poll_s`) when that long has passed with none of these, and once the
    store says the job ended. A job is usually watched from its submission, so its first events come
    while the stream is fresh; one that waits long in the queue costs the slow pace until it begins.
    """

    poll_s: float
    idle_poll_s: float
    idle_after_s: float
    clock: Callable[[], float] = time.monotonic
    running: bool = False
    ended: bool = False
    last_event: float = field(default=float("nan"))

    def __post_init__(self) -> None:
        self.last_event = self.clock()  # the stream just opened: its reader expects something soon

    def saw_event(self) -> None:
        """An event came: the job runs (whatever the store said at its last look)."""
        self.last_event = self.clock()
        self.running, self.ended = True, False

    def saw_status(self, status: JobStatus) -> None:
        if status == JobStatus.running and not self.running:
            self.last_event = self.clock()  # it just began: its first events are close
        self.running, self.ended = status == JobStatus.running, status.terminal

    def interval(self) -> float:
        active = not self.ended and self.clock() - self.last_event < self.idle_after_s
        return self.poll_s if active else max(self.poll_s, self.idle_poll_s)


async def follow(source: EventSource | None, store: Store, job_id: str, last_id: str | None, *, poll_s: float,
                 idle_poll_s: float = DEFAULTS.sse_idle_poll_s, idle_after_s: float = DEFAULTS.sse_idle_after_s,
                 stop: Callable[[], Awaitable[bool]] = never, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> AsyncIterator[StreamEvent]:
    """A job's events after `last_id`, until `final` (or until `stop()` says the reader left).

    With no source, `progress` events come from the store's counters (ids `p<done>`). Either way,
    when the store says the job ended and no `final` event came, one is made from the store. A
    source that dropped events this reader had not seen yet sends a `gap` event first (it is passed
    on: the reader re-reads results from the store), then the events it still keeps. It looks every
    `poll_s` while the job runs and events keep coming, every `idle_poll_s` otherwise (`Pace`); with a
    source, at the store every max(STORE_LOOK_S, poll_s). A source that can wait (MemoryEvents) wakes
    it when an event comes. `clock` and `sleep` are for tests.
    """
    pace = Pace(poll_s, idle_poll_s, idle_after_s, clock)
    seen_done = int(last_id[1:]) if last_id and last_id.startswith("p") and last_id[1:].isdigit() else -1
    next_store_look = 0.0
    while not await stop():
        try:
            batch = await source.after(job_id, last_id) if source is not None else []
        except LLMJobsError:  # the queue blinked: the events are still there, look again
            await sleep(pace.interval())
            continue
        for ev in batch:
            last_id = ev.id
            pace.saw_event()
            yield ev
            if isinstance(ev.event, FinalEvent):
                return
        if len(batch) >= getattr(source, "page", 1):
            continue  # more may be there already (a full page; any batch of a source with no `page`): look again
        if source is None or clock() >= next_store_look:  # with no source, the store is the stream: every time
            next_store_look = clock() + max(STORE_LOOK_S, poll_s)
            record = await store.get_job(job_id)
            if record is not None:
                pace.saw_status(record.status)
            if record is not None and source is None and record.completed + record.failed > seen_done:
                seen_done = record.completed + record.failed
                if record.status == JobStatus.running:  # (a queued job's first report is no sign of life)
                    pace.saw_event()
                yield StreamEvent(f"p{seen_done}", progress_event(record))
            if record is not None and record.status.terminal:
                if source is not None and await source.after(job_id, last_id):
                    continue  # events published just before the store said it ended: send them first
                yield StreamEvent("final", final_event(record))
                return
        await wait_for_event(source, job_id, last_id, pace.interval(), sleep=sleep)
