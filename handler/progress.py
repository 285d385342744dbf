"""Progress arithmetic for a running job: counts, rates and ETA, and the figures of its summary.

A run's figures are its own: item latency over the items it ran (not those found stored, which another
run timed), time to its first chunk, and the engine's peak KV-cache use while it ran. It keeps one float
per item it runs (a shard's, never the job's: a shard is what one run holds), for exact percentiles.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from shared.contracts.models import LatencyFigures, Progress, Result, ResultStatus, Summary, rank_index


class ProgressTracker:
    def __init__(self, total: int, *, skipped_ok: int = 0, skipped_failed: int = 0,
                 clock: Callable[[], float] = time.monotonic, kv_peak: Callable[[], float | None] | None = None):
        """`kv_peak` reads the engine's peak KV-cache use over this run (handler/engine/base.py
        `KvCacheWindow`); None: the engine does not say."""
        self.total = total
        self.skipped = skipped_ok + skipped_failed
        self.completed = skipped_ok
        self.failed = skipped_failed
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.error_codes: Counter[str] = Counter()
        #: latency (ms) of each result this run recorded that has one
        self.latencies: list[float] = []
        #: seconds from the start to the first chunk (`chunked`)
        self.first_chunk_s: float | None = None
        self._kv_peak = kv_peak
        self._clock = clock
        self._started = clock()

    def skip(self, ok: int, failed: int) -> None:
        """Items found stored already (a resumed run learns them page by page)."""
        self.skipped += ok + failed
        self.completed += ok
        self.failed += failed

    def record(self, result: Result) -> None:
        if result.status == ResultStatus.ok:
            self.completed += 1
        else:
            self.failed += 1
            self.error_codes[result.error.code if result.error else "unknown"] += 1
        if result.usage:
            self.prompt_tokens += result.usage.prompt_tokens
            self.completion_tokens += result.usage.completion_tokens
        if result.latency_ms is not None:
            self.latencies.append(result.latency_ms)

    def chunked(self) -> None:
        """A chunk of results was stored and is going out: the first one's time is kept."""
        if self.first_chunk_s is None:
            self.first_chunk_s = round(max(self._clock() - self._started, 0.0), 3)

    def latency_figures(self) -> LatencyFigures:
        """p50, p95 and max of the recorded latencies in ms: nearest-rank percentiles (shared/contracts/models.py
        `rank_index`: always one of the latencies, never an interpolation); None each when no result had one.
        The same shape a job of several shards gets from the store (handler/rollup.py)."""
        if not self.latencies:
            return LatencyFigures()
        ordered = sorted(self.latencies)
        n = len(ordered)
        return LatencyFigures(p50_ms=ordered[rank_index(n, 50)], p95_ms=ordered[rank_index(n, 95)], max_ms=ordered[-1])

    @property
    def done(self) -> int:
        return self.completed + self.failed

    def _rates(self) -> tuple[float, float, float]:
        elapsed = max(self._clock() - self._started, 1e-9)
        this_run = self.done - self.skipped
        return elapsed, this_run / elapsed, self.completion_tokens / elapsed

    def snapshot(self) -> Progress:
        elapsed, items_per_s, tokens_per_s = self._rates()
        remaining = self.total - self.done
        eta = 0.0 if remaining == 0 else (remaining / items_per_s if items_per_s > 0 else None)
        return Progress(
            completed=self.completed, failed=self.failed, total=self.total,
            percentage=round(100.0 * self.done / self.total, 2) if self.total else 100.0,
            elapsed_s=round(elapsed, 3), eta_s=None if eta is None else round(eta, 1),
            items_per_s=round(items_per_s, 3), tokens_per_s=round(tokens_per_s, 1), skipped=self.skipped,
        )

    def summary(self, reason: str | None = None) -> Summary:
        elapsed, items_per_s, tokens_per_s = self._rates()
        f = self.latency_figures()
        return Summary(
            total=self.total, completed=self.completed, failed=self.failed, skipped=self.skipped,
            elapsed_s=round(elapsed, 3), items_per_s=round(items_per_s, 3),
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
            tokens_per_s=round(tokens_per_s, 1), error_codes=dict(self.error_codes), reason=reason,
            latency_p50_ms=f.p50_ms, latency_p95_ms=f.p95_ms, latency_max_ms=f.max_ms, first_chunk_s=self.first_chunk_s,
            peak_kv_cache=self._kv_peak() if self._kv_peak is not None else None,
        )
