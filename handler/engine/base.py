"""The engine protocol: one request in, one completion out; cancelling aborts it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
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
    #: LoRA adapters loaded, by name (README, "LoRA adapters"); an engine without them serves none
    adapters: frozenset[str]
    #: ADAPTERS_DIR's adapters, by name: the engine may load them without the store
    found_adapters: Mapping[str, Path]

    async def add_adapter(self, name: str, path: str, base_model: str | None = None) -> None:
        """Load the adapter in `path` under `name` (nothing when loaded already). `base_model` (the store's)
        wins over the one its adapter_config.json names. Raises InputError naming the adapter when this
        engine cannot serve it (LoRA off, no such files, another base, a rank over MAX_LORA_RANK, vLLM
        refused it), and EngineError when the engine did not answer."""
        ...

    async def complete(self, request: Request) -> Completion:
        """Run one request.

        Raises ItemFailure for a problem with this request alone, and EngineDeadError when the
        engine is gone. Cancelling the call aborts the request inside the engine.
        """
        ...

    async def close(self) -> None: ...
