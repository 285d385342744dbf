"""The engine protocol: one request in, one completion out; cancelling aborts it.

An engine may also say how full its KV cache gets (`KvCacheTracking`): optional, so fakes need nothing;
the runner asks with getattr and records None where an engine does not say.
"""

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


class KvCacheWindow(Protocol):
    """The engine's KV-cache use over a span of time: from `kv_cache_window()` until `close()`."""

    @property
    def peak(self) -> float | None:
        """The highest fraction (0..1) of the KV cache in use seen since the window opened; None: none seen."""
        ...

    def close(self) -> None:
        """Stop watching: `peak` stays what it was."""
        ...


class KvCacheTracking(Protocol):
    """What an engine that says how full its KV cache gets adds to `Engine` (handler/engine/vllm_engine.py)."""

    def kv_cache_window(self) -> KvCacheWindow:
        """A window on the KV cache's use from now on: a run opens one as it starts and reads its peak at
        the end. Several runs on one engine each have their own; each sees the engine's use, which is
        every run's on it together (what a shared engine's cache truly holds)."""
        ...
