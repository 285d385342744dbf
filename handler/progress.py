"""Progress arithmetic for a running job: counts, rates and ETA."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from shared.contracts.models import Progress, Result, ResultStatus, Summary


class ProgressTracker:
    def __init__(self, total: int, *, skipped_ok: int = 0, skipped_failed: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.skipped = skipped_ok + skipped_failed
        self.completed = skipped_ok
        self.failed = skipped_failed
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.error_codes: Counter[str] = Counter()
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
        return Summary(
            total=self.total, completed=self.completed, failed=self.failed, skipped=self.skipped,
            elapsed_s=round(elapsed, 3), items_per_s=round(items_per_s, 3),
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
            tokens_per_s=round(tokens_per_s, 1), error_codes=dict(self.error_codes), reason=reason,
        )
