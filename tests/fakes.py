"""Fakes for fast unit tests of logic (never the only test of an integration): an engine, an API dispatcher."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from handler.engine.base import Completion
from shared.contracts.errors import EngineDeadError, ErrorCode, ItemFailure
from shared.contracts.events import (
    ChunkEvent,
    ErrorEvent,
    Event,
    FinalEvent,
    GapEvent,
    Outcome,
    ProgressEvent,
    TrainEvent,
)
from shared.contracts.models import ItemError, JobStatus, Progress, Result, ResultStatus, Summary, Usage
from shared.contracts.prepare import Request
from shared.server.events import MemoryEvents


def chunk_event(job_id: str, seq: int, results: list[Result] | None = None, *, total: int = 0) -> ChunkEvent:
    """A chunk event with made-up progress (for tests of event transport, not of the runner)."""
    results = results or []
    progress = Progress(completed=len(results), failed=0, total=total or len(results), percentage=0,
                        elapsed_s=0, eta_s=None, items_per_s=0, tokens_per_s=0)
    return ChunkEvent(job_id=job_id, seq=seq, results=results, progress=progress)


def final_event(job_id: str, outcome: Outcome = Outcome.completed, total: int = 0, **summary) -> FinalEvent:
    return FinalEvent(job_id=job_id, outcome=outcome, summary=Summary.empty(total).model_copy(update=summary))


def sample_events(job_id: str) -> list[Event]:
    """One event of each type, with every optional part filled in (for round trips through a transport)."""
    ok = Result(custom_id="a", status=ResultStatus.ok, text='{"n": 1}', parsed={"n": 1, "é": ["ü", None]},
                finish_reason="stop", usage=Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
                latency_ms=12.5)
    bad = Result(custom_id="b", status=ResultStatus.error, text="{oops", error=ItemError(code="invalid_output",
                 message="not JSON"), latency_ms=3.0)
    progress = Progress(completed=1, failed=1, total=3, percentage=66.67, elapsed_s=1.5, eta_s=0.75,
                        items_per_s=1.33, tokens_per_s=4.67, skipped=0)
    summary = Summary(total=3, completed=2, failed=1, skipped=1, elapsed_s=2.0, items_per_s=1.5, prompt_tokens=9,
                      completion_tokens=12, tokens_per_s=6.0, error_codes={"invalid_output": 1}, reason=None)
    return [
        ChunkEvent(job_id=job_id, seq=1, results=[ok, bad], progress=progress),
        ProgressEvent.of(job_id, JobStatus.running, total=3, completed=2, failed=1),
        ErrorEvent(job_id=job_id, error="invalid job: field 'sampling.temperature': too hot"),
        GapEvent(job_id=job_id, missed_after="1700000000000-0", reason="trimmed"),
        TrainEvent(job_id=job_id, phase="train", step=3, max_steps=30, epoch=0.25, loss=2.5, learning_rate=2e-4,
                   grad_norm=1.1, tokens_per_s=512.5, eta_s=42.0),
        FinalEvent(job_id=job_id, outcome=Outcome.completed, summary=summary.model_copy(
            update={"training": {"adapter": "a", "losses": [[1, 3.0], [3, 2.5]]}})),
    ]


class FakeEngine:
    model_name = "fake-model"
    served_models = frozenset({"fake-model"})
    alive = True

    def __init__(self, *, capacity: int = 8, delay: Callable[[Request], float] = lambda r: 0.0,
                 text: Callable[[Request], str] = lambda r: f"answer to {r.custom_id}",
                 fail: dict[str, ErrorCode] | None = None, die_on: str | None = None, lora: bool = False,
                 found_adapters: dict[str, Path] | None = None, refuse_adapters: dict[str, str] | None = None):
        #: LoRA adapters: `add_adapter` loads any but those in `refuse_adapters` (name -> why), and records each call
        self.lora_enabled = lora
        self.found_adapters = found_adapters or {}
        self.refuse_adapters = refuse_adapters or {}
        self.adapter_calls: list[tuple[str, str, str | None]] = []
        self._adapters: set[str] = set()
        self.capacity = capacity
        self.delay = delay
        self.text = text
        self.fail = fail or {}
        self.die_on = die_on
        self.in_flight = 0
        self.max_in_flight = 0
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.closed = False

    @property
    def adapters(self) -> frozenset[str]:
        return frozenset(self._adapters)

    async def add_adapter(self, name: str, path: str, base_model: str | None = None) -> None:
        from shared.contracts.adapters import refused

        self.adapter_calls.append((name, path, base_model))
        if not self.lora_enabled:
            raise refused(name, "this engine serves no adapters")
        if name in self.refuse_adapters:
            raise refused(name, self.refuse_adapters[name])
        self._adapters.add(name)

    async def complete(self, request: Request) -> Completion:
        if request.adapter is not None:
            assert request.adapter in self._adapters, f"adapter {request.adapter} reached the engine unloaded"
        self.started.append(request.custom_id)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay(request))
            if request.custom_id == self.die_on:
                raise EngineDeadError("fake engine died")
            if request.custom_id in self.fail:
                raise ItemFailure(self.fail[request.custom_id], f"{request.custom_id} failed on purpose")
            text = self.text(request)
            return Completion(text, "stop", prompt_tokens=5, completion_tokens=len(text.split()))
        except asyncio.CancelledError:
            self.cancelled.append(request.custom_id)
            raise
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        self.closed = True


class RecordingDispatcher:
    """An API dispatcher that records jobs and ends them at once (for testing the HTTP layer)."""

    name = "recording"

    def __init__(self) -> None:
        self.events = MemoryEvents()
        self.jobs: list[str] = []

    def check(self, ref) -> None: ...

    async def submit(self, refs) -> None:
        job_id = refs[0].job_id
        self.jobs.append(job_id)
        self.events.publish(job_id, FinalEvent(job_id=job_id, outcome=Outcome.completed,
                                               summary=Summary.empty(refs[0].total)))

    async def cancel(self, job_id: str) -> bool:
        return False

    async def ready(self) -> dict:
        return {"recorded": len(self.jobs)}

    async def close(self) -> None: ...
