"""The engine's LoRA adapters (README, "LoRA adapters"): vLLM's LoRARequest per name, each one checked and
loaded once, before any request that names it runs.

vLLM takes an adapter it has never seen at the first request that names it, and an adapter it then
refuses (a rank over max_lora_rank, say) kills the whole engine. So nothing reaches `generate` with an
adapter that `AsyncLLM.add_lora` has not accepted first: `load` reads the adapter's config (in a thread),
checks its base model against the engine's and its rank against MAX_LORA_RANK, then asks vLLM, and only
then keeps its LoRARequest. Loaded adapters stay for the engine's life (vLLM itself swaps them in and out
of its MAX_LORAS slots and MAX_CPU_LORAS cache).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.contracts.adapters import find_adapters, fits_base, read_adapter, refused
from shared.contracts.errors import EngineDeadError, EngineError
from shared.contracts.settings import Settings

log = logging.getLogger(__name__)


def lora_args(settings: Settings) -> dict[str, Any]:
    """vLLM's LoRA engine arguments, when Settings turn LoRA on."""
    if not settings.lora_enabled:
        return {}
    args: dict[str, Any] = {"enable_lora": True, "max_loras": settings.max_loras,
                            "max_lora_rank": settings.max_lora_rank}
    if settings.max_cpu_loras is not None:
        args["max_cpu_loras"] = settings.max_cpu_loras
    return args


def _vllm_reason(e: BaseException) -> str:
    """vLLM's own sentence from its utility-call wrapping ("Call to add_lora method failed: Worker failed with
    error '<reason>', please check ...")."""
    text = str(e)
    found = re.search(r"error '(.+?)'(?:, please check|$)", text, flags=re.S)
    return (found.group(1) if found else text).strip()[:500]


class LoraAdapters:
    """One engine's adapters: the loaded ones by name, and ADAPTERS_DIR's (found at boot)."""

    def __init__(self, settings: Settings, base_names: frozenset[str], served: str):
        self.enabled = settings.lora_enabled
        self.max_rank = settings.max_lora_rank
        self.timeout_s = settings.item_timeout_s
        self.base_names, self.served = base_names, served
        #: ADAPTERS_DIR's adapters, by subdirectory name (read at boot: the boot runs in a thread)
        self.found: Mapping[str, Path] = (find_adapters(settings.adapters_dir)
                                          if self.enabled and settings.adapters_dir else {})
        self._loaded: dict[str, Any] = {}  # name -> LoRARequest
        self._next_id = 1
        self._lock = asyncio.Lock()

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._loaded)

    def request_for(self, name: str) -> Any:
        """The LoRARequest of a loaded adapter; None if it is not loaded."""
        return self._loaded.get(name)

    async def load(self, llm: Any, name: str, path: str, base_model: str | None = None) -> None:
        """See `Engine.add_adapter`. `llm` is the AsyncLLM (never kept here: the engine's close() must free it)."""
        if name in self._loaded:
            return
        if not self.enabled:
            raise refused(name, "this engine serves no adapters (set ENABLE_LORA=true, or ADAPTERS_DIR)")
        async with self._lock:  # one load at a time: two jobs naming a new adapter load it once
            if name in self._loaded:
                return
            try:
                files = await asyncio.to_thread(read_adapter, Path(path))
            except ValueError as e:
                raise refused(name, str(e)) from None
            base = base_model or files.base_model
            if not fits_base(base, self.base_names):
                raise refused(name, f"it was made for '{base}', and this engine serves '{self.served}'")
            if files.rank > self.max_rank:
                raise refused(name, f"its rank {files.rank} is over MAX_LORA_RANK={self.max_rank}")
            await self._add(llm, name, files.path)

    async def _add(self, llm: Any, name: str, path: Path) -> None:
        from vllm.lora.request import LoRARequest

        request = LoRARequest(lora_name=name, lora_int_id=self._next_id, lora_path=str(path))
        self._next_id += 1  # never reused, whatever happens next
        try:
            async with asyncio.timeout(self.timeout_s):
                await llm.add_lora(request)
        except TimeoutError as e:
            raise EngineError(f"adapter '{name}': vLLM did not load it within ITEM_TIMEOUT_S={self.timeout_s:g} s"
                              ) from e
        except Exception as e:
            if llm.errored:
                raise EngineDeadError(f"the engine died loading adapter '{name}': {llm.dead_error}") from e
            raise refused(name, f"vLLM refused it: {_vllm_reason(e)}") from None
        self._loaded[name] = request
        log.info("adapter %s loaded from %s", name, path)
