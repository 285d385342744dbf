"""The job and queue gauges of `/metrics`, set from the store and the queue when it is scraped.

Workers on serverless platforms (RunPod, Modal) cannot be scraped, and a worker knows only its own items:
how many jobs are queued, running or done, and how deep the queue is, are the store's and the queue's to say.
So the API looks at them itself (`Store.count_jobs`, `JobQueue.stats`) and sets `JOBS`, `QUEUE_DEPTH`,
`QUEUE_RUNNING`, `QUEUE_RETRYING`, `DEAD_LETTERS` and `LEASE_EXPIRIES` (shared/observability/metrics.py) before
each scrape is answered.

A flood of scrapes shares one look, as /readyz's probes do (shared/server/api/readiness.py): one look at a
time, under a lock, reused for METRICS_CACHE_S seconds, each call bounded by HTTP_TIMEOUT_S. A look that fails
(the store or the queue does not answer) leaves its gauges as they were and logs a warning: a scrape always
gets an answer, never a 500, and a stale gauge is better than none. A failed look is cached too, so scrapes
never hammer a store that is down.
"""

from __future__ import annotations

import asyncio
import logging
import time

from shared.observability.metrics import DEAD_LETTERS, JOBS, LEASE_EXPIRIES, QUEUE_DEPTH, QUEUE_RETRYING, QUEUE_RUNNING
from shared.queue.upstash import PRIORITIES, JobQueue
from shared.server.lifecycle import JobLifecycle

log = logging.getLogger("shared.server.metrics")


class DerivedGauges:
    def __init__(self, lifecycle: JobLifecycle, *, cache_s: float, timeout_s: float):
        self.lifecycle, self.cache_s, self.timeout_s = lifecycle, cache_s, timeout_s
        self._at: float | None = None
        self._lock = asyncio.Lock()

    @property
    def queue(self) -> JobQueue | None:
        """The dispatcher's queue (DISPATCHER=queue); None where jobs go elsewhere (local, RunPod, Modal)."""
        queue = getattr(self.lifecycle.dispatcher, "queue", None)
        return queue if isinstance(queue, JobQueue) else None

    async def refresh(self) -> None:
        """Set the gauges, unless they were set less than `cache_s` seconds ago. Never raises."""
        if self._fresh():
            return
        async with self._lock:  # one look at a time; whoever waited reuses the look it waited for
            if self._fresh():
                return
            await asyncio.gather(self._jobs(), self._queue())
            self._at = time.monotonic()

    def _fresh(self) -> bool:
        return self._at is not None and time.monotonic() - self._at < self.cache_s

    async def _jobs(self) -> None:
        try:
            counts = await asyncio.wait_for(self.lifecycle.store.count_jobs(), self.timeout_s)
        except Exception as e:  # any failure leaves the gauges as they were
            _failed("store", e)
            return
        for state, n in counts.items():
            JOBS.labels(state=state).set(n)

    async def _queue(self) -> None:
        queue = self.queue
        if queue is None:
            return
        try:
            stats = await asyncio.wait_for(queue.stats(), self.timeout_s)
        except Exception as e:
            _failed("queue", e)
            return
        for priority in PRIORITIES:
            QUEUE_DEPTH.labels(priority=priority).set(stats[f"queued_{priority}"])
        QUEUE_RUNNING.set(stats["running"])
        QUEUE_RETRYING.set(stats["retrying"])
        DEAD_LETTERS.set(stats["dead"])
        LEASE_EXPIRIES.set(stats["lease_expiries"])


def _failed(what: str, e: Exception) -> None:
    reason = "no answer in time" if isinstance(e, TimeoutError) else f"{type(e).__name__}: {e}"
    log.warning("/metrics: the %s did not answer, its gauges keep their last values: %s", what, reason)
