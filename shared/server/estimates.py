"""How long a job will take, from what the model's last jobs measured (issue 15).

A submit answers `estimated_time_s`. It comes from the throughput of the last
`ESTIMATE_SAMPLE_JOBS` completed jobs of the same model and task (a task's prompts and outputs
have their own length) as the store kept their summaries: the items they ran over the seconds
they ran, pooled (a big job counts for more than a small one). Where there is no such finished
job yet, ESTIMATE_ITEMS_PER_S stands in, and the answer says so (`from_jobs` is 0).

The figure is one worker's: a job split into shards that several workers take at once ends
sooner. It is read at most once per ESTIMATE_CACHE_S per model, so a burst of submits costs one
query.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shared.contracts.models import Summary
from shared.stores import Store

#: a job that ran fewer items than this says little about throughput (its start dominates)
MIN_ITEMS = 4


@dataclass(frozen=True, slots=True)
class Throughput:
    items_per_s: float
    #: the finished jobs it was measured over; 0: the configured default (nothing measured yet)
    from_jobs: int

    def seconds(self, total: int) -> float:
        return round(total / self.items_per_s, 1)


def pooled(summaries: Sequence[Summary], default: float) -> Throughput:
    """Items over seconds, summed over the jobs that ran at least MIN_ITEMS items here (resumed items,
    found stored, are not counted); `default` when none did."""
    items = seconds = 0.0
    jobs = 0
    for s in summaries:
        ran = s.completed + s.failed - s.skipped
        if ran >= MIN_ITEMS and s.elapsed_s > 0:
            items, seconds, jobs = items + ran, seconds + s.elapsed_s, jobs + 1
    if not jobs:
        return Throughput(default, 0)
    return Throughput(items / seconds, jobs)


class Estimator:
    def __init__(self, store: Store, *, default_items_per_s: float, sample_jobs: int, cache_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.store, self.default, self.sample_jobs, self.cache_s = store, default_items_per_s, sample_jobs, cache_s
        self._clock = clock
        self._seen: dict[tuple[str, str | None], tuple[float, Throughput]] = {}

    async def throughput(self, model: str, task: str | None = None) -> Throughput:
        """The throughput measured on the model's jobs of `task` (None: jobs of no task), cached `cache_s`."""
        now = self._clock()
        hit = self._seen.get((model, task))
        if hit is not None and hit[0] > now:
            return hit[1]
        found = pooled(await self.store.finished_summaries(model, task, limit=self.sample_jobs), self.default)
        if len(self._seen) > 1000:  # models and tasks are few; names from clients are not trusted to be
            self._seen.clear()
        self._seen[(model, task)] = (now + self.cache_s, found)
        return found
