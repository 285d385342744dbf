"""The runner's rules, with a fake engine: chunking, progress, failures, cancellation."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from handler.progress import ProgressTracker
from handler.runner import StopSignal, run_job
from shared.contracts.errors import ErrorCode
from shared.contracts.events import ChunkEvent, FinalEvent, Outcome
from shared.contracts.inputs import parse_job_text
from shared.contracts.models import JobStatus, Result, ResultStatus, Usage
from tests.conftest import make_job
from tests.fakes import FakeEngine


async def collect(gen):
    return [e async for e in gen]


def split(events):
    chunks = [e for e in events if isinstance(e, ChunkEvent)]
    (final,) = [e for e in events if isinstance(e, FinalEvent)]
    assert events[-1] is final
    return chunks, final


async def test_chunks_by_size_with_every_result_once():
    events = await collect(run_job(make_job(64), FakeEngine(capacity=16), chunk_size=10, chunk_interval_s=60))
    chunks, final = split(events)
    assert [len(c.results) for c in chunks] == [10] * 6 + [4]
    assert [c.seq for c in chunks] == list(range(1, 8))
    ids = [r.custom_id for c in chunks for r in c.results]
    assert sorted(ids) == sorted(f"c{i}" for i in range(64))
    assert final.status == JobStatus.completed and final.summary.completed == 64


async def test_chunks_by_interval_when_results_are_slow():
    engine = FakeEngine(capacity=1, delay=lambda r: 0.03)
    events = await collect(run_job(make_job(6), engine, chunk_size=100, chunk_interval_s=0.05))
    chunks, _final = split(events)
    assert len(chunks) >= 3, [len(c.results) for c in chunks]  # never waited for 100 results
    assert sum(len(c.results) for c in chunks) == 6


async def test_job_chunk_size_overrides_the_default():
    job = make_job(9, chunk_size=4)
    chunks, _ = split(await collect(run_job(job, FakeEngine(), chunk_size=10, chunk_interval_s=60)))
    assert [len(c.results) for c in chunks] == [4, 4, 1]


async def test_concurrency_is_bounded_by_engine_capacity():
    engine = FakeEngine(capacity=5, delay=lambda r: 0.005)
    await collect(run_job(make_job(40), engine))
    assert engine.max_in_flight == 5


async def test_a_failing_item_becomes_an_error_result_and_the_job_completes():
    engine = FakeEngine(fail={"c3": ErrorCode.prompt_too_long})
    chunks, final = split(await collect(run_job(make_job(10), engine)))
    by_id = {r.custom_id: r for c in chunks for r in c.results}
    assert by_id["c3"].status == ResultStatus.error and by_id["c3"].error.code == "prompt_too_long"
    assert sum(r.status == ResultStatus.ok for r in by_id.values()) == 9
    assert final.status == JobStatus.completed
    assert (final.summary.failed, final.summary.error_codes) == (1, {"prompt_too_long": 1})


async def test_rejected_items_are_reported_as_error_results():
    job = parse_job_text('{"prompt": "fine"}\n{"prompt": 5}\n')
    chunks, final = split(await collect(run_job(job, FakeEngine())))
    by_id = {r.custom_id: r for c in chunks for r in c.results}
    assert by_id["item-1"].error.code == "invalid_item" and by_id["item-1"].error.message.startswith("line 2")
    assert final.summary.total == 2 and final.summary.failed == 1


async def test_invalid_structured_output_is_an_item_error():
    doc = {"response_format": {"type": "json_schema", "json_schema": {"schema": {
        "type": "object", "properties": {"nota": {"type": "integer", "maximum": 5}}, "required": ["nota"]}}},
        "items": [{"custom_id": "good", "prompt": "x"}, {"custom_id": "bad", "prompt": "y"}]}
    engine = FakeEngine(text=lambda r: '{"nota": 3}' if r.custom_id == "good" else '{"nota": 7}')
    chunks, _ = split(await collect(run_job(parse_job_text(json.dumps(doc)), engine)))
    by_id = {r.custom_id: r for c in chunks for r in c.results}
    assert by_id["good"].parsed == {"nota": 3}
    assert by_id["bad"].error.code == "invalid_output" and by_id["bad"].text == '{"nota": 7}'


async def test_engine_death_fails_the_job_with_a_reason_and_keeps_finished_results():
    engine = FakeEngine(capacity=1, die_on="c5")
    chunks, final = split(await collect(run_job(make_job(10), engine, chunk_size=2)))
    assert final.status == JobStatus.failed and "fake engine died" in final.summary.reason
    assert sorted(r.custom_id for c in chunks for r in c.results) == ["c0", "c1", "c2", "c3", "c4"]


async def test_closing_the_generator_cancels_outstanding_requests():
    engine = FakeEngine(capacity=4, delay=lambda r: 0.01 if r.custom_id == "c0" else 30)
    gen = run_job(make_job(20), engine, chunk_size=1)
    first = await anext(gen)
    assert first.results[0].custom_id == "c0"
    await gen.aclose()
    assert engine.in_flight == 0
    assert sorted(engine.cancelled) == ["c1", "c2", "c3", "c4"]
    assert len(engine.started) == 5  # nothing new started after close


async def test_cancelling_the_consuming_task_cancels_requests():
    engine = FakeEngine(capacity=3, delay=lambda r: 30)

    async def consume():
        async for _ in run_job(make_job(10), engine):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.in_flight == 0 and len(engine.cancelled) == 3


# ## Progress arithmetic


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def ok(cid, tokens=10):
    return Result(custom_id=cid, status=ResultStatus.ok, text="x",
                  usage=Usage(prompt_tokens=3, completion_tokens=tokens, total_tokens=3 + tokens))


def test_progress_math():
    clock = Clock()
    p = ProgressTracker(10, clock=clock)
    clock.t += 2.0
    for i in range(3):
        p.record(ok(f"a{i}"))
    p.record(Result.failure("bad", "timeout", "slow"))
    snap = p.snapshot()
    assert (snap.completed, snap.failed, snap.total, snap.percentage) == (3, 1, 10, 40.0)
    assert snap.elapsed_s == 2.0 and snap.items_per_s == 2.0 and snap.tokens_per_s == 15.0
    assert snap.eta_s == 3.0  # 6 left at 2 items/s
    summary = p.summary()
    assert summary.error_codes == {"timeout": 1} and summary.prompt_tokens == 9


def test_progress_counts_resumed_items_but_not_in_the_rate():
    clock = Clock()
    p = ProgressTracker(10, skipped_ok=5, skipped_failed=1, clock=clock)
    clock.t += 1.0
    p.record(ok("x"))
    snap = p.snapshot()
    assert (snap.completed, snap.failed, snap.skipped, snap.percentage) == (6, 1, 6, 70.0)
    assert snap.items_per_s == 1.0 and snap.eta_s == 3.0


def test_progress_eta_unknown_before_any_result():
    p = ProgressTracker(4, clock=Clock())
    assert p.snapshot().eta_s is None


async def test_stop_aborts_in_flight_work_keeps_what_is_in_and_ends_queued():
    engine = FakeEngine(capacity=4, delay=lambda r: 0.01 if r.custom_id in ("c0", "c1", "c2") else 30)
    stop = StopSignal()
    asyncio.get_running_loop().call_later(0.3, stop.set)  # c0-c2 are done; c3... are in flight
    started = time.monotonic()
    events = await collect(run_job(make_job(20), engine, chunk_size=10, chunk_interval_s=60, stop=stop))
    assert time.monotonic() - started < 5  # did not wait for the chunk, the interval or the slow items
    chunks, final = split(events)
    assert final.outcome is Outcome.stopped and final.status == JobStatus.queued
    assert "re-run resumes" in final.summary.reason
    assert {r.custom_id for c in chunks for r in c.results} == {"c0", "c1", "c2"}
    assert engine.in_flight == 0 and len(engine.cancelled) >= 1


async def test_each_request_is_built_once_per_process(monkeypatch):
    from shared.contracts.prepare import RequestBuilder

    built: list[str] = []
    original = RequestBuilder.build

    def counting(self, item):
        built.append(item.custom_id)
        return original(self, item)

    monkeypatch.setattr(RequestBuilder, "build", counting)
    text = "\n".join(json.dumps({"custom_id": f"r{i}", "fields": {"n": i}}) for i in range(5))
    engine = FakeEngine()
    job = parse_job_text(text, options={"template": "Say {{ n }}"}, served_models=engine.served_models)
    assert sorted(built) == [f"r{i}" for i in range(5)]  # validation built each one
    _, final = split(await collect(run_job(job, engine)))
    assert final.outcome is Outcome.completed and sorted(built) == [f"r{i}" for i in range(5)]  # reused

    # a job read back from its wire form (another process) is built once there, by the runner
    built.clear()
    from shared.contracts.models import Job

    again = Job.model_validate(job.wire())
    _, final = split(await collect(run_job(again, engine)))
    assert final.outcome is Outcome.completed and sorted(built) == [f"r{i}" for i in range(5)]
