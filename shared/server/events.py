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
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from shared.contracts.errors import LLMJobsError
from shared.contracts.events import Event, FinalEvent, GapEvent, Outcome, ProgressEvent
from shared.contracts.models import JobRecord, Summary
from shared.contracts.settings import DEFAULTS
from shared.queue.upstash import JobQueue
from shared.stores.base import Store

_STREAM_ID = re.compile(r"^\d+-\d+$")


@dataclass(frozen=True)
class StreamEvent:
    #: what a reader sends back as Last-Event-ID to resume after this event
    id: str
    event: Event


class EventSource(Protocol):
    async def after(self, job_id: str, last_id: str | None) -> list[StreamEvent]:
        """Events after `last_id` (all when None), oldest first; a `gap` first when some were dropped."""


class QueueEvents:
    def __init__(self, queue: JobQueue):
        self.queue = queue

    async def after(self, job_id: str, last_id: str | None) -> list[StreamEvent]:
        after = last_id if last_id and _STREAM_ID.match(last_id) else None
        return [StreamEvent(e.id, e.event) for e in await self.queue.events(job_id, after=after, count=100)]


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

    def publish(self, job_id: str, event: Event) -> None:
        self._shrink_ended()
        tail = self._tails.get(job_id)
        if tail is None:
            tail = self._tails[job_id] = _Tail(self.maxlen)
            while len(self._tails) > self.keep_jobs:
                self.forget(next(iter(self._tails)))
        tail.events.append(event)
        tail.count += 1
        if isinstance(event, FinalEvent):
            self._ended[job_id] = self._clock()
            self._ended.move_to_end(job_id)
        else:
            self._ended.pop(job_id, None)  # running again

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


async def follow(source: EventSource | None, store: Store, job_id: str, last_id: str | None, *, poll_s: float,
                 stop: Callable[[], Awaitable[bool]] = never) -> AsyncIterator[StreamEvent]:
    """A job's events after `last_id`, until `final` (or until `stop()` says the reader left).

    With no source, `progress` events come from the store's counters (ids `p<done>`). Either way,
    when the store says the job ended and no `final` event came, one is made from the store. A
    source that dropped events this reader had not seen yet sends a `gap` event first (it is passed
    on: the reader re-reads results from the store), then the events it still keeps.
    """
    seen_done = int(last_id[1:]) if last_id and last_id.startswith("p") and last_id[1:].isdigit() else -1
    next_store_look = 0.0
    while not await stop():
        try:
            batch = await source.after(job_id, last_id) if source is not None else []
        except LLMJobsError:  # the queue blinked: the events are still there, look again
            await asyncio.sleep(poll_s)
            continue
        for ev in batch:
            last_id = ev.id
            yield ev
            if isinstance(ev.event, FinalEvent):
                return
        if batch:
            continue
        if time.monotonic() >= next_store_look:
            next_store_look = time.monotonic() + (poll_s if source is None else max(2.0, poll_s))
            record = await store.get_job(job_id)
            if record is not None and source is None and record.completed + record.failed > seen_done:
                seen_done = record.completed + record.failed
                yield StreamEvent(f"p{seen_done}", progress_event(record))
            if record is not None and record.status.terminal:
                if source is not None and await source.after(job_id, last_id):
                    continue  # events published just before the store said it ended: send them first
                yield StreamEvent("final", final_event(record))
                return
        await asyncio.sleep(poll_s)
