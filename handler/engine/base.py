"""The engine protocol: one request in, one completion out; cancelling aborts it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shared.contracts.prepare import Request


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


class Engine(Protocol):
    #: the name results carry; OpenAI lines must name one of `served_models`
    model_name: str
    served_models: frozenset[str]
    #: requests worth keeping in flight at once (the runner's semaphore)
    capacity: int
    #: False once the engine has died: every job on it fails, and a worker stops taking jobs
    alive: bool

    async def complete(self, request: Request) -> Completion:
        """Run one request.

        Raises ItemFailure for a problem with this request alone, and EngineDeadError when the
        engine is gone. Cancelling the call aborts the request inside the engine.
        """
        ...

    async def close(self) -> None: ...
