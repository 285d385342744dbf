"""The queue-drain worker: one engine, several jobs at once, leases kept alive, nothing lost.

    loop: reap expired leases -> reserve -> run the job through the runner with the store -> ack

- `drain=True` returns once the queue is empty and no job is running (Cron, scheduled runs);
  otherwise it polls with backoff (no blocking Redis commands over REST).
- Each job's events go to its Redis stream as they are produced.
- A job's lease is extended every third of LEASE_S; a lost lease stops the job. The heartbeat
  never starves: CPU work that grows with a job (parsing it, building its requests) runs in
  threads (JobQueue.reserve, run_job), never on this event loop.
- A cancelled job stops at its next chunk and is acked; a failed job is nacked (retried with
  backoff, then dead-lettered); a job no engine here can run is dead-lettered at once. An engine
  that is really dead stops the worker.
- `stop()` (SIGTERM) takes no new jobs; running jobs stop at once (requests in flight are
  aborted, results already in are stored), end `stopped` and are released, so another worker
  resumes them without waiting for the lease.
- The lease is settled by `match` on the run's outcome (docs/architecture.md, "Leases").
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from handler.engine.base import Engine
from handler.evals import EvalHook
from handler.evals import ended as eval_ended
from handler.logs import outline, work_ids
from handler.rollup import conclude, end_job
from handler.runner import StopSignal, run_job
from handler.training.run import Trainer, is_training
from shared.contracts.errors import LLMJobsError, QueueError
from shared.contracts.events import ChunkEvent, ErrorEvent, Event, FinalEvent, Outcome, TrainEvent
from shared.contracts.models import Summary
from shared.contracts.prepare import Limits
from shared.contracts.settings import DEFAULTS
from shared.contracts.shards import ShardRef
from shared.observability.context import log_context
from shared.queue.upstash import JobQueue, Lease, Priority, Work
from shared.stores.base import Store, record_outcome

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


async def _refused(final: FinalEvent) -> AsyncIterator[Event]:
    yield ErrorEvent(job_id=final.job_id, error=final.summary.reason or "refused")
    yield final


class Worker:
    def __init__(self, engine: Engine | None, queue: JobQueue, store: Store, *, worker_id: str | None = None,
                 concurrency: int = 1, lease_s: float = DEFAULTS.lease_s, drain: bool = False,
                 limits: Limits = Limits(), store_retry_s: float = DEFAULTS.store_retry_s, poll_min_s: float = 0.2,
                 poll_max_s: float = 5.0, page_items: int = DEFAULTS.read_page_items,
                 chunk_size: int = DEFAULTS.default_chunk_size,
                 chunk_interval_s: float = DEFAULTS.default_chunk_interval_s, trainer: Trainer | None = None):
        """`trainer` runs training jobs (handler/training/run.py): with one, the worker also takes the queue's
        `train` lane; without one, it never sees a training job. With no `engine` (a training box), it takes
        the train lane only."""
        if engine is None and trainer is None:
            raise ValueError("a worker needs an engine, a trainer, or both")
        self.engine, self.queue, self.store = engine, queue, store
        self.trainer = trainer
        #: the queue's lanes this worker takes, in order
        self.lanes: tuple[Priority, ...] = (("high", "default") if engine is not None else ()) + (
            ("train",) if trainer is not None else ())
        self.worker_id = worker_id or default_worker_id()
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.drain = drain
        self.limits = limits
        self.store_retry_s = store_retry_s
        self.poll_min_s, self.poll_max_s = poll_min_s, poll_max_s
        self.page_items = page_items
        #: a job that sets no chunk_size / chunk_interval_s gets these (DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_INTERVAL_S)
        self.chunk_size, self.chunk_interval_s = chunk_size, chunk_interval_s
        self.stats = WorkerStats()
        self._stopping = asyncio.Event()
        self._running: set[StopSignal] = set()
        self._engine_dead = False
        self._hooks: dict[str, EvalHook | None] = {}  # lease entry id -> its eval run hook (handler/evals.py)

    def stop(self) -> None:
        """Take no new jobs; stop running ones at once and hand them back."""
        if not self._stopping.is_set():
            log.info("worker=%s stopping: no new jobs; running jobs are handed back", self.worker_id)
        self._stopping.set()
        for signal in self._running:
            signal.set(Outcome.stopped)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _log(self, lease: Lease, msg: str, *args: object, level: int = logging.INFO) -> None:
        log.log(level, "job=%s worker=%s attempt=%d " + msg, lease.entry_id, self.worker_id, lease.attempt, *args)

    async def run(self) -> WorkerStats:
        with log_context(worker=self.worker_id):  # every line of this worker and of the jobs it runs names it
            return await self._drain()

    async def _drain(self) -> WorkerStats:
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
                        lease = await self.queue.reserve(self.worker_id, self.lease_s, lanes=self.lanes)
                    except QueueError as e:
                        log.warning("worker=%s queue: %s", self.worker_id, e)
                if lease is not None:
                    idle = self.poll_min_s
                    task = asyncio.create_task(self._process(lease), name=f"job-{lease.entry_id}")
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
        """Nothing queued in the lanes this worker takes and nothing waiting out a retry backoff (for --drain):
        a training job waiting in the train lane does not keep an inference worker draining, nor the reverse."""
        try:
            stats = await self.queue.stats()
        except QueueError:
            return False
        return sum(stats[f"queued_{lane}"] for lane in self.lanes) + stats["retrying"] == 0

    async def _heartbeat(self, lease: Lease, stop: StopSignal) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                if not await self.queue.extend(lease, self.lease_s):
                    self._log(lease, "lease lost; stopping this job", level=logging.WARNING)
                    stop.set(Outcome.stopped, record=False)  # another worker owns it: record nothing
                    return
            except QueueError as e:  # keep trying: the lease may still be ours
                self._log(lease, "heartbeat failed: %s", e, level=logging.WARNING)

    async def _process(self, lease: Lease) -> None:
        """Run one lease, every line logged meanwhile (its runner's tasks, the engine's, the store's) carrying
        its job, shard, worker and attempt (shared/observability/context.py)."""
        with log_context(**work_ids(lease.job), worker=self.worker_id, attempt=lease.attempt):
            await self._run_lease(lease)

    async def _run_lease(self, lease: Lease) -> None:
        job, job_id = lease.job, lease.job_id
        self._log(lease, "running %s of %d item(s)", job.label() if isinstance(job, ShardRef) else "the whole job",
                  job.total)
        stop = StopSignal()
        self._running.add(stop)
        if self.stopping:
            stop.set(Outcome.stopped)
        beat = asyncio.create_task(self._heartbeat(lease, stop))
        final: FinalEvent | None = None
        invalid = False
        crash: str | None = None
        hook = await EvalHook.for_work(self.store, job, retry_s=self.store_retry_s,  # an eval run's job: scored
                                       engine=self.engine)
        self._hooks[lease.entry_id] = hook
        if is_training(job) and self.trainer is not None:  # a training job: its trainer's events
            gen = self.trainer.run(job, self.store, stop=stop, on_close=None)
        elif self.engine is None:  # only training jobs wait in the train lane: this one should not be there
            gen = _refused(FinalEvent.failed(job_id, "a training worker (no engine) took a job that is not training"))
        else:
            gen = run_job(job, self.engine, store=self.store, limits=self.limits, store_retry_s=self.store_retry_s,
                          page_items=self.page_items, chunk_size=self.chunk_size,
                          chunk_interval_s=self.chunk_interval_s, stop=stop, on_close=None,
                          on_stored=hook and hook.scored)
        try:
            async for event in gen:
                if isinstance(event, FinalEvent):
                    final = event  # published by _settle, once it knows whether the job is over
                    continue
                invalid = invalid or isinstance(event, ErrorEvent)
                await self._publish(job_id, event)
                if isinstance(event, ChunkEvent | TrainEvent) and not stop.is_set() and await self._cancelled(job_id):
                    stop.set(Outcome.cancelled)
        except Exception as e:  # a bug must not kill the worker; the job is retried, then dead-lettered
            crash = f"{type(e).__name__}: {e}"  # the queue's last error and the job's reason keep the message
            # the log does not: it may quote an item (handler/logs.py `outline`)
            self._log(lease, "crashed: %s", outline(e), level=logging.ERROR)
        finally:
            await gen.aclose()
            beat.cancel()
            self._running.discard(stop)
        try:
            await self._settle(lease, final, lost=stop.is_set() and not stop.record, invalid=invalid, crash=crash)
        except LLMJobsError as e:  # the lease will expire and the job be redelivered: nothing is lost
            self._log(lease, "could not settle: %s", e, level=logging.ERROR)
        finally:
            self._hooks.pop(lease.entry_id, None)

    async def _cancelled(self, job_id: str) -> bool:
        try:
            return await self.queue.is_cancelled(job_id)
        except QueueError as e:
            log.warning("job=%s worker=%s cancel check failed: %s", job_id, self.worker_id, e)
            return False

    async def _settle(self, lease: Lease, final: FinalEvent | None, *, lost: bool, invalid: bool,
                      crash: str | None) -> None:
        """Settle the lease by the run's outcome; publish the job's final event only when the job is over
        (a stopped job, or a failed one that will be retried, runs again: its readers keep waiting; a
        shard's end is the job's only when it was the last: handler/rollup.py)."""
        job = lease.job
        match final.outcome if final is not None else None:
            case _ if lost:
                self._log(lease, "abandoned (lease lost; another worker has it)", level=logging.WARNING)
            case Outcome.completed:
                await self.queue.ack(lease)
                await self._conclude(lease, final)
                self.stats.done += 1
                s = final.summary
                self._log(lease, "completed: %s ok, %s failed, %s skipped", s.completed, s.failed, s.skipped)
            case Outcome.cancelled:
                await self.queue.ack(lease)
                await self._conclude(lease, final)
                self.stats.cancelled += 1
                self._log(lease, "cancelled")
            case Outcome.stopped:
                await self._release(lease)
            case Outcome.failed if invalid:  # no engine here can ever run it: no retry
                await self.queue.nack(lease, final.summary.reason or "invalid job", dead_letter=True)
                await self._dead(lease, final, final.summary.reason or "invalid job")
                self.stats.dead_lettered += 1
                self._log(lease, "invalid job, dead-lettered: %s", final.summary.reason, level=logging.WARNING)
            case _ if self.stopping:  # e.g. Ctrl-C reached the engine's processes too: not the job's fault
                await self._release(lease)
                if not job.sharded:
                    await self._record(job, Outcome.stopped, final, "handed back: the worker stopped")
            case _:  # failed, or crashed before its final event
                reason = crash or (final.summary.reason if final else None) or "failed"
                verdict = await self.queue.nack(lease, reason)
                self.stats.failed += 1
                self.stats.errors.append(reason)
                if verdict == "dead":
                    self.stats.dead_lettered += 1
                    await self._dead(lease, final, reason)
                elif not job.sharded:  # it runs again after a backoff: waiting, not failed
                    await self._record(job, Outcome.stopped, final, f"attempt {lease.attempt} failed, will retry: "
                                       f"{reason}")
                self._log(lease, "failed (%s): %s", verdict, reason, level=logging.WARNING)
                if self.engine is not None and not self.engine.alive:
                    self._engine_dead = True
                    self.stop()

    async def _conclude(self, lease: Lease, final: FinalEvent) -> None:
        """Publish the job's final event when this run ended the job (always, for a job of one shard)."""
        ended = await conclude(self.store, lease.job, final, retry_s=self.store_retry_s)
        await eval_ended(self._hooks.get(lease.entry_id), ended)
        if ended is not None:
            await self._publish(lease.job_id, ended)

    async def _dead(self, lease: Lease, final: FinalEvent | None, reason: str) -> None:
        """A dead-lettered entry fails its job; the job's other shards are stopped (they would be wasted)."""
        if lease.job.sharded:
            ended = await end_job(self.store, lease.job_id, Outcome.failed,
                                  f"{lease.job.label()} failed: {reason}", retry_s=self.store_retry_s)
            try:
                await self.queue.cancel(lease.job_id)
            except QueueError as e:
                self._log(lease, "could not stop the job's other shards: %s", e, level=logging.WARNING)
        else:
            ended = await self._record(lease.job, Outcome.failed, final, reason)
        await eval_ended(self._hooks.get(lease.entry_id), ended)
        if ended is not None:
            await self._publish(lease.job_id, ended)

    async def _record(self, job: Work, outcome: Outcome, final: FinalEvent | None, reason: str) -> FinalEvent:
        """Record what the worker decided over the runner's outcome (a retry pending, a dead letter)."""
        base = final.summary if final is not None else Summary.empty(job.total)
        ended = FinalEvent(job_id=job.job_id, outcome=outcome, summary=base.model_copy(update={"reason": reason}))
        await record_outcome(self.store, job.job_id, outcome, ended.summary, retry_s=self.store_retry_s)
        return ended

    async def _release(self, lease: Lease) -> None:
        await self.queue.nack(lease, "worker stopped", release=True)
        self.stats.released += 1
        self._log(lease, "handed back (worker stopping)")

    async def _publish(self, job_id: str, event: Event) -> None:
        try:
            await self.queue.publish(job_id, event)
        except QueueError as e:  # events are best effort: the store has every result
            log.warning("job=%s worker=%s event not published: %s", job_id, self.worker_id, e)

    @property
    def engine_dead(self) -> bool:
        return self._engine_dead
