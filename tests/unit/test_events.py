"""The event union (shared/contracts/events.py): every event survives its JSON form, and what is not
an event is refused. The same round trip through the real transports: tests/queue/test_queue.py
(Redis stream) and tests/api/test_sse.py (the API's SSE, read by the SDK)."""

from __future__ import annotations

import asyncio
import json
import typing

import pytest
from pydantic import ValidationError

from handler.runner import StopSignal, run_job
from shared.contracts.errors import ErrorCode
from shared.contracts.events import (
    ChunkEvent,
    ErrorEvent,
    Event,
    FinalEvent,
    GapEvent,
    Outcome,
    ProgressEvent,
    TrainEvent,
    parse_event,
)
from shared.contracts.models import Item, Job, JobStatus, Rejection, Summary
from shared.stores.sqlite import SQLiteStore
from tests.conftest import make_job
from tests.fakes import FakeEngine, sample_events

EVENTS = sample_events("job-1")


@pytest.mark.parametrize("event", EVENTS, ids=[e.type for e in EVENTS])
def test_every_event_type_round_trips_through_json(event):
    text = event.model_dump_json()
    for form in (text, text.encode(), json.loads(text), event.model_dump(mode="json")):
        back = parse_event(form)
        assert type(back) is type(event) and back == event


def test_the_six_types_are_the_union():
    union, _ = typing.get_args(Event)  # Annotated[ChunkEvent | ... , Field(discriminator="type")]
    assert set(typing.get_args(union)) == {ChunkEvent, ProgressEvent, ErrorEvent, FinalEvent, GapEvent, TrainEvent}
    assert [type(e) for e in EVENTS] == [ChunkEvent, ProgressEvent, ErrorEvent, GapEvent, TrainEvent, FinalEvent]
    assert [e.type for e in EVENTS] == ["chunk", "progress", "error", "gap", "train", "final"]


def test_a_gap_event_from_the_start_says_so_and_has_a_default_reason():
    gap = parse_event({"type": "gap", "job_id": "j", "missed_after": None})
    assert isinstance(gap, GapEvent) and gap.missed_after is None and "results" in gap.reason


def test_a_final_event_without_a_summary_is_refused():
    with pytest.raises(ValidationError, match="summary"):
        parse_event({"type": "final", "job_id": "j", "outcome": "completed"})
    with pytest.raises(ValidationError, match="summary"):
        parse_event({"type": "final", "job_id": "j", "outcome": "completed", "summary": None})
    with pytest.raises(ValidationError):
        FinalEvent(job_id="j", outcome=Outcome.completed)
    # the old shape (a status, no outcome, a summary that may be missing) is not an event any more
    with pytest.raises(ValidationError):
        parse_event({"type": "final", "job_id": "j", "status": "completed", "summary": None})


@pytest.mark.parametrize("data", [
    {"type": "heartbeat", "job_id": "j"},
    {"job_id": "j", "error": "no type"},
    '{"type": "chunks", "job_id": "j", "seq": 1, "results": []}',
    "not json",
])
def test_what_is_not_an_event_is_refused(data):
    with pytest.raises(ValidationError):
        parse_event(data)


def test_an_event_missing_a_field_of_its_type_is_refused():
    with pytest.raises(ValidationError, match="progress"):
        parse_event({"type": "chunk", "job_id": "j", "seq": 1, "results": []})


@pytest.mark.parametrize(("outcome", "status"), [
    (Outcome.completed, JobStatus.completed),
    (Outcome.failed, JobStatus.failed),
    (Outcome.cancelled, JobStatus.cancelled),
    (Outcome.stopped, JobStatus.queued),  # a stopped job waits to run again
])
def test_each_outcome_records_a_status(outcome, status):
    assert outcome.status is status
    final = FinalEvent(job_id="j", outcome=outcome, summary=Summary.empty(1))
    assert final.status is status
    assert parse_event(final.model_dump_json()).status is status
    if status.terminal:
        assert Outcome.of(status) is outcome


@pytest.mark.parametrize("status", [JobStatus.queued, JobStatus.running])
def test_a_job_that_has_not_ended_has_no_outcome(status):
    assert not status.terminal
    with pytest.raises(ValueError, match="no outcome"):
        Outcome.of(status)


def test_failed_final_and_progress_helpers():
    final = FinalEvent.failed("j", "invalid job: nope", total=4)
    assert (final.outcome, final.status, final.summary.reason) == (Outcome.failed, JobStatus.failed,
                                                                  "invalid job: nope")
    assert (final.summary.total, final.summary.completed, final.summary.failed) == (4, 0, 0)
    p = ProgressEvent.of("j", JobStatus.running, total=8, completed=3, failed=1)
    assert p.percentage == 50.0
    assert ProgressEvent.of("j", JobStatus.completed, total=0, completed=0, failed=0).percentage == 100.0


# ## What the runner yields survives the same round trip


def round_trips(events) -> None:
    for e in events:
        back = parse_event(e.model_dump_json())
        assert type(back) is type(e) and back == e, e


async def test_a_runners_events_round_trip(tmp_path):
    job = Job(items=[Item(custom_id=f"c{i}", prompt=f"p{i}") for i in range(5)],
              rejected=[Rejection(custom_id="r0", index=5, field="prompt", message="too long")], chunk_size=2)
    store = SQLiteStore(tmp_path / "jobs.db")
    events = [e async for e in run_job(job, FakeEngine(fail={"c3": ErrorCode.timeout}), store=store)]
    await store.close()
    assert [e.type for e in events] == ["chunk"] * 3 + ["final"]
    final = events[-1]
    assert final.outcome is Outcome.completed and (final.summary.completed, final.summary.failed) == (4, 2)
    assert final.summary.error_codes == {"timeout": 1, "invalid_item": 1}
    round_trips(events)


async def test_an_invalid_jobs_events_round_trip_and_it_is_recorded_failed(tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    job = make_job(2, id="wrong", model="gpt-9")
    assert await store.accept(job)  # submitted through the API, which cannot know the engine's models
    events = [e async for e in run_job(job, FakeEngine(), store=store)]
    assert [type(e) for e in events] == [ErrorEvent, FinalEvent]
    assert "gpt-9" in events[0].error and events[0].job_id == "wrong"
    assert events[1].outcome is Outcome.failed and events[1].summary.reason.startswith("invalid job")
    assert events[1].summary.total == 2
    round_trips(events)
    record = await store.get_job("wrong")  # it ended: its readers see it end, a re-submit runs it again
    assert record.status == JobStatus.failed and "gpt-9" in record.error
    assert await store.done_ids("wrong") == {}  # nothing ran
    await store.close()


async def test_a_stopped_runs_final_round_trips_as_stopped():
    stop = StopSignal()
    engine = FakeEngine(capacity=1, delay=lambda r: 0.01 if r.custom_id == "c0" else 30)
    asyncio.get_running_loop().call_later(0.2, stop.set)
    events = [e async for e in run_job(make_job(3), engine, chunk_size=1, stop=stop)]
    final = parse_event(events[-1].model_dump_json())
    assert final.outcome is Outcome.stopped and final.status is JobStatus.queued
    round_trips(events)


# ## The local dispatcher's buffer: a short tail per job, a gap for a reader behind it


def _chunks(events, job_id: str, n: int) -> None:
    from tests.fakes import chunk_event

    for seq in range(1, n + 1):
        events.publish(job_id, chunk_event(job_id, seq))


async def test_memory_events_keep_a_short_tail_and_tell_a_reader_behind_it_of_the_gap():
    from shared.server.events import MemoryEvents

    events = MemoryEvents(maxlen=10)
    _chunks(events, "j", 25)
    for last_id in (None, "3", "14"):
        got = await events.after("j", last_id)
        assert isinstance(got[0].event, GapEvent) and got[0].event.missed_after == last_id
        assert got[0].id == "15"  # the last id dropped: resuming from it is not a gap again
        assert [e.id for e in got[1:]] == [str(i) for i in range(16, 26)]
        assert [e.event.seq for e in got[1:]] == list(range(16, 26))
    assert [e.id for e in await events.after("j", "15")] == [str(i) for i in range(16, 26)]
    assert [e.id for e in await events.after("j", "20")] == [str(i) for i in range(21, 26)]
    assert await events.after("j", "25") == []
    assert sum(len(t) for t in events._tails.values()) == 10  # the tail, never the whole job


async def test_memory_events_keep_only_the_final_once_a_job_has_ended_for_a_while():
    from shared.server.events import MemoryEvents

    now = [0.0]
    events = MemoryEvents(maxlen=100, grace_s=30, clock=lambda: now[0])
    _chunks(events, "j", 5)
    events.publish("j", FinalEvent(job_id="j", outcome=Outcome.completed, summary=Summary.empty(5)))
    assert len(await events.after("j", None)) == 6  # within the grace period: a reader gets every event
    now[0] = 31.0
    got = await events.after("j", "5")  # it had every chunk: no gap, just the final
    assert [(e.id, e.event.type) for e in got] == [("6", "final")]
    got = await events.after("j", "2")
    assert [(e.id, e.event.type) for e in got] == [("5", "gap"), ("6", "final")]
    assert len(events._tails["j"]) == 1


async def test_follow_over_memory_events_sends_the_gap_then_the_rest(tmp_path):
    from shared.server.events import MemoryEvents, follow

    events = MemoryEvents(maxlen=10)
    _chunks(events, "j", 20)
    events.publish("j", FinalEvent(job_id="j", outcome=Outcome.completed, summary=Summary.empty(20)))
    store = SQLiteStore(tmp_path / "jobs.db")
    got = [ev async for ev in follow(events, store, "j", "2", poll_s=0.01)]
    await store.close()
    assert [e.event.type for e in got] == ["gap"] + ["chunk"] * 9 + ["final"]
    assert got[0].event.missed_after == "2"


async def test_the_sdk_surfaces_a_gap_and_reads_on_to_the_final():
    import httpx

    from shared.sdk._backends import HttpBackend
    from shared.sdk._client import AsyncJob

    gap = GapEvent(job_id="j", missed_after="1-0")
    final = FinalEvent(job_id="j", outcome=Outcome.completed, summary=Summary.empty(2))
    body = "".join(f"id: {i}\nevent: {e.type}\ndata: {e.model_dump_json()}\n\n"
                   for i, e in [("5-0", gap), ("6-0", final)])
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("last-event-id"))
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    backend = HttpBackend("http://api.test", transport=httpx.MockTransport(answer))
    job = AsyncJob(backend, "j", {})
    job._last_event = "1-0"
    got = [e async for e in job.stream()]
    await backend.aclose()
    assert [type(e) for e in got] == [GapEvent, FinalEvent]
    assert seen == ["1-0"] and job.final == final
    assert job.gaps == 1  # the caller can tell it missed events: results() re-reads them from the store


async def test_the_local_dispatcher_keeps_only_an_events_maxlen_tail_of_a_big_job(tmp_path):
    from shared.contracts.settings import Settings
    from shared.contracts.shards import plan_shards
    from shared.server.dispatch import LocalDispatcher
    from tests.fakes import chunk_event

    class Service:  # JobService's `events`, without an engine: 50 chunks, then the final
        async def events(self, job):
            for seq in range(1, 51):
                yield chunk_event(job.job_id, seq)
            yield FinalEvent(job_id=job.job_id, outcome=Outcome.completed, summary=Summary.empty(50))

    store = SQLiteStore(tmp_path / "jobs.db")
    dispatcher = LocalDispatcher(Settings(_env_file=None, events_maxlen=10), store, service=Service())
    await dispatcher.submit(plan_shards(make_job(50, id="big"), 50, 20))  # three shards: run here as one
    await dispatcher._tasks["big"]
    got = await dispatcher.events.after("big", None)
    await store.close()
    assert [e.event.type for e in got] == ["gap"] + ["chunk"] * 9 + ["final"]
    assert got[-1].id == "51"
