"""How full vLLM's KV cache gets while a run runs: a summary's `peak_kv_cache`.

vLLM's scheduler reports its KV-cache use (`SchedulerStats.kv_cache_usage`, 0..1) with its outputs,
step by step, to the stat loggers AsyncLLM was given (`AsyncLLM.from_engine_args(stat_loggers=...)`).
`stat_logger(stats)` is one such logger: it hands each reading to a `KvCacheStats`, which keeps the
peak of every open `KvCacheWindow` (one per run).

Stats logging: a custom stat logger turns vLLM's stats on even with `disable_log_stats=True` (AsyncLLM:
`log_stats = log_stats or has_custom_loggers`); its Prometheus logger (`vllm:*`) comes with it either way,
and its periodic log lines only with `disable_log_stats=False` and a caller of `do_log_stats` (none here).

vLLM's `StatLoggerBase` is imported only when the logger is made (`stat_logger`), inside the engine's boot:
`KvCacheStats` and its windows are plain Python, for tests and for importing without vLLM. vLLM calls the
logger from its output handler, on the event loop the engine serves; a lock keeps the windows whole
against a window opened or closed from another thread.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any


class KvCacheWindow:
    """The peak KV-cache use seen from its opening until `close()` (handler/engine/base.py `KvCacheWindow`)."""

    def __init__(self, owner: KvCacheStats):
        self._owner: KvCacheStats | None = owner
        #: the highest reading since it opened; None: none yet
        self.peak: float | None = None

    def seen(self, usage: float) -> None:
        if self.peak is None or usage > self.peak:
            self.peak = usage

    def close(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.forget(self)


class KvCacheStats:
    """The KV-cache readings of one engine, handed to each open window (its peak).

    The windows are held weakly: a run that never closes its window (a crashed one) leaves nothing behind.
    With several engine cores (data parallel) each reports its own use; a window's peak is the highest of
    any of them.
    """

    def __init__(self) -> None:
        self._windows: weakref.WeakSet[KvCacheWindow] = weakref.WeakSet()
        self._lock = threading.Lock()

    def observe(self, usage: float) -> None:
        """One reading of the KV cache's use (0..1), from the scheduler's stats."""
        with self._lock:
            for window in self._windows:
                window.seen(usage)

    def window(self) -> KvCacheWindow:
        """A window on the readings from now on (see handler/engine/base.py `KvCacheTracking`)."""
        window = KvCacheWindow(self)
        with self._lock:
            self._windows.add(window)
        return window

    def forget(self, window: KvCacheWindow) -> None:
        with self._lock:
            self._windows.discard(window)


def stat_logger(stats: KvCacheStats) -> Any:
    """A vLLM stat logger class (a per-engine factory: `cls(vllm_config, engine_index)`) that hands every
    `SchedulerStats.kv_cache_usage` to `stats`. Imports vLLM: call it where the engine boots."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class KvCacheLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0):
            self.engine_index = engine_index

        def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
                   engine_idx: int = 0) -> None:
            if scheduler_stats is not None:
                stats.observe(float(scheduler_stats.kv_cache_usage))

        def log_engine_initialized(self) -> None:
            pass

    return KvCacheLogger
