"""/readyz: does the store answer, and can the dispatcher take jobs? Looked at once per READYZ_CACHE_S. Its
details also list what is served: the model and its LoRA adapters (shared/server/models.py).

A flood of probes shares one look (the first caller looks, the others wait for its answer, and
the answer is reused for READYZ_CACHE_S seconds), so probes cannot hammer the store, the queue or
RunPod. Who sees what is the route's business (shared/server/api/routes.py): the answer here holds
the details, and a failed check holds its error's kind and an error id, never its text: the text
(a file path, a DSN, a driver message) goes to the log under that id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from shared.server.api.problems import error_id
from shared.server.lifecycle import JobLifecycle

log = logging.getLogger("shared.server.api")


@dataclass(frozen=True)
class Readiness:
    ok: bool
    #: details for callers who may see them: the dispatcher's name, its stats, each check's "ok" or failure
    checks: dict[str, Any] = field(default_factory=dict)


class ReadinessProbe:
    def __init__(self, lifecycle: JobLifecycle, *, cache_s: float, timeout_s: float):
        self.lifecycle, self.cache_s, self.timeout_s = lifecycle, cache_s, timeout_s
        self._last: tuple[float, Readiness] | None = None
        self._lock = asyncio.Lock()

    async def check(self) -> Readiness:
        if (fresh := self._fresh()) is not None:
            return fresh
        async with self._lock:  # one look at a time; whoever waited reuses the answer it brought
            if (fresh := self._fresh()) is not None:
                return fresh
            answer = await self._look()
            self._last = (time.monotonic(), answer)
            return answer

    def _fresh(self) -> Readiness | None:
        if self._last is not None and time.monotonic() - self._last[0] < self.cache_s:
            return self._last[1]
        return None

    async def _look(self) -> Readiness:
        dispatcher = self.lifecycle.dispatcher
        checks: dict[str, Any] = {"dispatcher": dispatcher.name if dispatcher is not None else None}
        ok = True
        try:
            await asyncio.wait_for(self.lifecycle.store.get_job("readyz-probe"), self.timeout_s)
            checks["store"] = "ok"
        except Exception as e:  # any failure is "not ready", never a 500
            ok, checks["store"] = False, _failed("store", e)
        if dispatcher is not None:
            try:
                checks.update(await asyncio.wait_for(dispatcher.ready(), self.timeout_s))
            except Exception as e:
                ok, checks["dispatch"] = False, _failed("dispatch", e)
        if checks["store"] == "ok":  # what is served: the model and its LoRA adapters (shared/server/models.py)
            try:
                seen = await asyncio.wait_for(self.lifecycle.serving(), self.timeout_s)
                checks["models"], checks["adapters"] = [seen.model], [a.name for a in seen.adapters]
            except Exception as e:  # a list it could not make is not a reason to refuse jobs
                checks["models"] = _failed("models", e)
        return Readiness(ok, checks)


def _failed(what: str, e: Exception) -> str:
    eid = error_id()
    reason = "no answer in time" if isinstance(e, TimeoutError) else f"{type(e).__name__}: {e}"
    log.warning("readyz: the %s check failed [error id %s]: %s", what, eid, reason)
    kind = "TimeoutError" if isinstance(e, TimeoutError) else type(e).__name__
    return f"failed: {kind} (error id {eid}; the text is in the server log)"
