"""Where a job's events come from, for `GET /v1/jobs/{id}/events` and the SDK's local backend.

- QueueEvents: the job's capped Redis stream (Upstash), written by whichever worker runs it.
  Ids are the stream's ids, so `Last-Event-ID` resumes exactly after the last event seen.
- MemoryEvents: jobs this process runs itself (the local dispatcher); ids count up from 1.
- With neither (RunPod, Modal), the stream is made from the store: a `progress` event each time
  the job's counters move, then `final`. Results are read from /results (or Supabase Realtime).
In every case, once the store says the job ended, the stream ends with a `final` event.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from shared.contracts.errors import LLMJobsError
from shared.contracts.events import Event, FinalEvent, Outcome, ProgressEvent
from shared.contracts.models import JobRecord, Summary
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
        """Events after `last_id` (all when None), oldest first."""


class QueueEvents:
    def __init__(self, queue: JobQueue):
        self.queue = queue

    async def after(self, job_id: str, last_id: str | None) -> list[StreamEvent]:
        after = last_id if last_id and _STREAM_ID.match(last_id) else None
        return [StreamEvent(e.id, e.event) for e in await self.queue.events(job_id, after=after, count=100)]


class MemoryEvents:
    """Events of the jobs this process ran, the last `keep_jobs` of them (older ones: the store answers)."""

    def __init__(self, keep_jobs: int = 1000) -> None:
        self.keep_jobs = keep_jobs
        self._events: dict[str, list[Event]] = {}

    def publish(self, job_id: str, event: Event) -> None:
        if job_id not in self._events:
            self._events[job_id] = []
            while len(self._events) > self.keep_jobs:
                del self._events[next(iter(self._events))]
        self._events[job_id].append(event)

    def forget(self, job_id: str) -> None:
        self._events.pop(job_id, None)

    async def after(self, job_id: str, last_id: str | None) -> list[StreamEvent]:
        start = int(last_id) if last_id and last_id.isdigit() else 0
        events = self._events.get(job_id, [])
        return [StreamEvent(str(i + 1), e) for i, e in enumerate(events[start:], start=start)]


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
    when the store says the job ended and no `final` event came, one is made from the store.
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
