"""The queue-drain worker: one engine, several jobs at once, leases kept alive, nothing lost.

    loop: reap expired leases -> reserve -> run the job through the runner with the store -> ack

- `drain=True` returns once the queue is empty and no job is running (Cron, scheduled runs);
  otherwise it polls with backoff (no blocking Redis commands over REST).
- Each job's events go to its Redis stream as they are produced.
- A job's lease is extended every third of LEASE_S; a lost lease stops the job.
- A cancelled job stops at its next chunk and is acked; a failed job is nacked (retried with
  backoff, then dead-lettered). An engine that is really dead stops the worker.
- `stop()` (SIGTERM) takes no new jobs; running jobs stop at once (requests in flight are
  aborted, results already in are stored), record `queued` and are released, so another worker
  resumes them without waiting for the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field

from handler.engine.base import Engine
from handler.runner import run_job
from shared.errors import InputError, LLMJobsError, QueueError
from shared.models import ChunkEvent, FinalEvent, JobStatus
from shared.prepare import Limits, RequestBuilder
from shared.queue import JobQueue, Lease
from shared.stores.base import Store

log = logging.getLogger("llm_jobs.worker")


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class WorkerStats:
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    released: int = 0
    dead_lettered: int = 0
    errors: list[str] = field(default_factory=list)


class Worker:
    def __init__(self, engine: Engine, queue: JobQueue, store: Store, *, worker_id: str | None = None,
                 concurrency: int = 1, lease_s: float = 120, drain: bool = False, limits: Limits = Limits(),
                 store_retry_s: float = 60, poll_min_s: float = 0.2, poll_max_s: float = 5.0):
        self.engine, self.queue, self.store = engine, queue, store
        self.worker_id = worker_id or default_worker_id()
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.drain = drain
        self.limits = limits
        self.store_retry_s = store_retry_s
        self.poll_min_s, self.poll_max_s = poll_min_s, poll_max_s
        self.stats = WorkerStats()
        self._stopping = asyncio.Event()
        self._engine_dead = False

    def stop(self) -> None:
        """Take no new jobs; hand running ones back at their next chunk."""
        if not self._stopping.is_set():
            log.info("worker=%s stopping: no new jobs; running jobs are handed back", self.worker_id)
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _log(self, lease: Lease, msg: str, *args: object, level: int = logging.INFO) -> None:
        log.log(level, "job=%s worker=%s attempt=%d " + msg, lease.job.id, self.worker_id, lease.attempt, *args)

    async def run(self) -> WorkerStats:
        running: set[asyncio.Task[None]] = set()
        idle = self.poll_min_s
        log.info("worker=%s started (concurrency=%d, lease=%gs, drain=%s)", self.worker_id, self.concurrency,
                 self.lease_s, self.drain)
        try:
            while not self.stopping:
                lease = None
                if len(running) < self.concurrency:
                    try:
                        await self.queue.reap()
                        lease = await self.queue.reserve(self.worker_id, self.lease_s)
                    except QueueError as e:
                        log.warning("worker=%s queue: %s", self.worker_id, e)
                if lease is not None:
                    idle = self.poll_min_s
                    task = asyncio.create_task(self._process(lease), name=f"job-{lease.job.id}")
                    running.add(task)
                    task.add_done_callback(running.discard)
                    continue
                if self.drain and not running and await self._queue_empty():
                    break
                # nothing to take (or no free slot): wait for a slot, a stop, or the next poll
                waiters = [*running, asyncio.create_task(self._stopping.wait())]
                await asyncio.wait(waiters, timeout=idle, return_when=asyncio.FIRST_COMPLETED)
                waiters[-1].cancel()
                idle = min(idle * 2, self.poll_max_s)
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        log.info("worker=%s stopped: %s", self.worker_id, self.stats)
        return self.stats

    async def _queue_empty(self) -> bool:
        """Nothing queued and nothing waiting out a retry backoff (for --drain)."""
        try:
            stats = await self.queue.stats()
        except QueueError:
            return False
        return sum(v for k, v in stats.items() if k.startswith("queued_")) + stats["retrying"] == 0

    async def _heartbeat(self, lease: Lease, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                if not await self.queue.extend(lease, self.lease_s):
                    self._log(lease, "lease lost; stopping this job", level=logging.WARNING)
                    lost.set()
                    return
            except QueueError as e:  # keep trying: the lease may still be ours
                self._log(lease, "heartbeat failed: %s", e, level=logging.WARNING)

    async def _process(self, lease: Lease) -> None:
        job = lease.job
        try:  # a job that can never run here is dead-lettered at once, not retried
            RequestBuilder(job, self.limits, self.engine.served_models)
        except InputError as e:
            self.stats.dead_lettered += 1
            self._log(lease, "invalid job, dead-lettered: %s", e, level=logging.WARNING)
            with contextlib.suppress(LLMJobsError):
                await self.queue.nack(lease, f"invalid job: {e}", dead_letter=True)
            return
        self._log(lease, "running %d item(s)", job.total)
        lost = asyncio.Event()
        beat = asyncio.create_task(self._heartbeat(lease, lost))
        final: FinalEvent | None = None
        stop_reason: str | None = None
        crash: str | None = None
        # a lost lease means another worker owns the job now: record nothing over its work
        gen = run_job(job, self.engine, store=self.store, limits=self.limits, store_retry_s=self.store_retry_s,
                      stop=self._stopping, close_status=lambda: None if lost.is_set() else JobStatus.cancelled)
        try:
            async for event in gen:
                await self._publish(job.id, event)
                if isinstance(event, FinalEvent):
                    final = event
                elif isinstance(event, ChunkEvent):
                    stop_reason = await self._should_stop(job.id, lost)
                    if stop_reason:
                        break
        except Exception as e:  # a bug must not kill the worker; the job is retried, then dead-lettered
            crash = f"{type(e).__name__}: {e}"
            self._log(lease, "crashed: %s", crash, level=logging.ERROR)
            log.exception("job=%s worker=%s crash", job.id, self.worker_id)
        finally:
            await gen.aclose()
            beat.cancel()
        await self._settle(lease, final, stop_reason, crash)

    async def _should_stop(self, job_id: str, lost: asyncio.Event) -> str | None:
        if lost.is_set():
            return "lost"
        try:
            if await self.queue.is_cancelled(job_id):
                return "cancelled"
        except QueueError as e:
            log.warning("job=%s worker=%s cancel check failed: %s", job_id, self.worker_id, e)
        return None

    async def _settle(self, lease: Lease, final: FinalEvent | None, stop: str | None,
                      crash: str | None = None) -> None:
        if final is not None and final.status == JobStatus.queued:
            stop = "released"  # the runner stopped because this worker is stopping
        elif self.stopping and stop is None and (final is None or final.status == JobStatus.failed):
            stop = "released"  # e.g. Ctrl-C reached the engine's processes too: not the job's fault
        try:
            if stop == "released":
                await self.queue.nack(lease, "worker stopped", release=True)
                self.stats.released += 1
                self._log(lease, "handed back (worker stopping)")
            elif stop == "lost":
                self._log(lease, "abandoned (lease lost; another worker has it)", level=logging.WARNING)
            elif stop == "cancelled":
                await self.queue.ack(lease)
                await self._publish(lease.job.id, {"type": "final", "job_id": lease.job.id, "status": "cancelled"})
                self.stats.cancelled += 1
                self._log(lease, "cancelled")
            elif final is None or final.status == JobStatus.failed:
                reason = crash or (final.summary.reason if final else None) or "failed"
                outcome = await self.queue.nack(lease, reason)
                self.stats.failed += 1
                self.stats.errors.append(reason)
                if outcome == "dead":
                    self.stats.dead_lettered += 1
                self._log(lease, "failed (%s): %s", outcome, reason, level=logging.WARNING)
                if not getattr(self.engine, "alive", True):
                    self._engine_dead = True
                    self.stop()
            else:
                await self.queue.ack(lease)
                self.stats.done += 1
                s = final.summary if final else None
                self._log(lease, "completed: %s ok, %s failed, %s skipped", s and s.completed, s and s.failed,
                          s and s.skipped)
        except LLMJobsError as e:  # the lease will expire and the job be redelivered: nothing is lost
            self._log(lease, "could not settle: %s", e, level=logging.ERROR)

    async def _publish(self, job_id: str, event: ChunkEvent | FinalEvent | dict) -> None:
        data = event if isinstance(event, dict) else event.model_dump(mode="json")
        try:
            await self.queue.publish(job_id, data, final=data.get("type") == "final")
        except QueueError as e:  # events are best effort: the store has every result
            log.warning("job=%s worker=%s event not published: %s", job_id, self.worker_id, e)

    @property
    def engine_dead(self) -> bool:
        return self._engine_dead
