"""Fakes for fast unit tests of logic (never the only test of an integration): an engine, an API dispatcher."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from handler.engine.base import Completion
from shared.api.events import MemoryEvents
from shared.errors import EngineDeadError, ErrorCode, ItemFailure
from shared.prepare import Request


class FakeEngine:
    model_name = "fake-model"
    served_models = frozenset({"fake-model"})

    def __init__(self, *, capacity: int = 8, delay: Callable[[Request], float] = lambda r: 0.0,
                 text: Callable[[Request], str] = lambda r: f"answer to {r.custom_id}",
                 fail: dict[str, ErrorCode] | None = None, die_on: str | None = None):
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

    async def complete(self, request: Request) -> Completion:
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

    async def submit(self, job, doc) -> None:
        self.jobs.append(job.id)
        self.events.publish(job.id, {"type": "final", "job_id": job.id, "status": "completed", "summary": None})

    async def cancel(self, job_id: str) -> bool:
        return False

    async def ready(self) -> dict:
        return {"recorded": len(self.jobs)}

    async def close(self) -> None: ...
