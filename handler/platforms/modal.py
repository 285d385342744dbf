"""What modal_app.py's class, training functions and Cron do, kept here so the app file stays wiring only.

Nothing here imports modal: it is plain async code over a JobService (or, for a training job, a
Trainer), so it runs (and is tested) anywhere. What Modal itself does (a volume's commit and reload, a
spawn, a function's backlog) is handed in as plain callables. Inputs are shard references of staged jobs
(what the API spawns, one call per shard: shared/contracts/shards.py) or whole Job documents; outputs are
events as JSON (shared/contracts/events.py).

Training jobs (handler/training/run.py) never run on the inference class: vLLM holds its GPU's memory
(TRAIN_JOBS=false there). They run on a GPU and the training volume of their own: the API spawns the
`train` function for one (`train_to_end`), and the Cron (`check_queue`) spawns `drain_train` for those
waiting in the queue's `train` lane (`drain_train_lane`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from handler.logs import work_ids
from handler.runner import StopSignal
from handler.service import JobService
from handler.training.run import Trainer, is_training
from shared.contracts.errors import InputError, Issue, JobFailed
from shared.contracts.events import ErrorEvent, Event, FinalEvent, Outcome, TrainEvent, parse_event
from shared.contracts.inputs import parse_job_document
from shared.contracts.models import Job, Summary
from shared.contracts.prepare import Limits
from shared.contracts.settings import Settings
from shared.contracts.shards import ShardRef, is_shard_ref
from shared.contracts.tasks import load_tasks
from shared.observability.context import log_context
from shared.queue.upstash import JobQueue
from shared.stores import Store, open_store
from shared.stores.base import record_outcome

#: something of Modal's to await: a volume's `commit.aio` or `reload.aio`
VolumeCall = Callable[[], Awaitable[Any]]

log = logging.getLogger("llm_jobs.modal")


async def stream_events(service: JobService, payload: Any, *, default_id: str | None = None
                        ) -> AsyncIterator[dict[str, Any]]:
    """Chunk events as they are stored, then the final event. Invalid input gives an `error`
    event and a `failed` final event, and runs nothing.

    `default_id` is Modal's function call id: every line logged meanwhile carries it (`request`), and the
    job's id and shard once the input is read (shared/observability/context.py)."""
    with log_context(request=default_id):
        try:
            job = service.parse(payload, default_id=default_id)
        except InputError as e:
            job_id = payload.get("id") if isinstance(payload, dict) and isinstance(payload.get("id"), str) else None
            reason = f"invalid input: {e}"
            await service.refuse(job_id, reason)
            yield ErrorEvent(job_id=job_id, error=reason).model_dump(mode="json")
            yield FinalEvent.failed(job_id or default_id or "", reason).model_dump(mode="json")
            return
        with log_context(**work_ids(job)):
            if is_training(job) and service.trainer is None:
                # the inference class (TRAIN_JOBS=false): refused as invalid input, so `run` returns instead of
                # raising, and Modal does not retry what no retry here could run
                reason = "a training job runs on the `train` function, not on LLMJobs (TRAIN_JOBS=false here)"
                await service.refuse(job.job_id, reason)
                yield ErrorEvent(job_id=job.job_id, error=reason).model_dump(mode="json")
                yield FinalEvent.failed(job.job_id, reason).model_dump(mode="json")
                return
            async for event in service.events(job):
                yield event.model_dump(mode="json")


async def run_to_end(service: JobService, payload: Any, *, default_id: str | None = None) -> dict[str, Any]:
    """The final event of the whole job. Raises JobFailed when a retry could help."""
    final: FinalEvent | None = None
    invalid = False
    async for data in stream_events(service, payload, default_id=default_id):
        event = parse_event(data)
        invalid = invalid or isinstance(event, ErrorEvent)
        if isinstance(event, FinalEvent):
            final = event
    assert final is not None, "every run ends with a final event"
    if final.outcome is Outcome.failed and not invalid:
        # raised so Modal retries the call (engine death, store outage); the retry resumes
        raise JobFailed(f"job {final.job_id} failed: {final.summary.reason or 'failed'}")
    return final.model_dump(mode="json")


async def reload_quietly(reload: VolumeCall | None, what: str) -> None:
    """See what other containers committed to a volume since this one mounted it (a trained adapter, a
    checkpoint), if Modal lets us now: it refuses while files on the volume are open (a job of this container
    reading an adapter), and the next call tries again."""
    if reload is None:
        return
    try:
        await reload()
    except Exception as e:  # best effort: what this container already sees still serves
        log.warning("could not reload the %s volume: %s: %s", what, type(e).__name__, e)


# ## Training jobs (the `train` and `drain_train` functions)


class VolumeTrainer:
    """A trainer whose runs commit the training volume: after every checkpoint, so a retry on a fresh container
    resumes from it, and at the end, whatever the end (the adapter and merged model, for LLMJobs to serve; a
    stopped or cancelled job's last checkpoint). Its events are logged too: Modal's logs show the loss.

    Commits run in the background, one after another, so this wrapper only ever awaits the trainer: a cancel
    lands inside the trainer, which records the outcome with its checkpoint saved. A failed commit is logged,
    not raised: training goes on, and a retry resumes from the last checkpoint that was committed. The last
    commit is shielded from a cancel. Works wherever a `Trainer` does (`train_to_end`, the queue's Worker)."""

    def __init__(self, trainer: Trainer, commit: VolumeCall | None):
        self.trainer, self.commit = trainer, commit

    async def run(self, work: Job | ShardRef, store: Store | None, *, stop: StopSignal | None = None,
                  on_close: Outcome | None = Outcome.cancelled) -> AsyncIterator[Event]:
        commits: asyncio.Future[None] | None = None
        try:
            async with contextlib.aclosing(self.trainer.run(work, store, stop=stop, on_close=on_close)) as events:
                async for event in events:
                    if isinstance(event, TrainEvent):
                        log.info("job=%s %s step %d/%d%s", event.job_id, event.phase, event.step, event.max_steps,
                                 f" loss={event.loss}" if event.loss is not None else "")
                        if event.phase == "checkpoint" and self.commit is not None:
                            commits = asyncio.ensure_future(_commit_after(commits, self.commit, work.job_id))
                    yield event
        finally:
            if self.commit is not None:
                await asyncio.shield(_commit_after(commits, self.commit, work.job_id))


async def _commit_after(previous: asyncio.Future[None] | None, commit: VolumeCall, job_id: str) -> None:
    """Commit once the commit before it has ended; a failure is logged (see VolumeTrainer)."""
    if previous is not None:
        await asyncio.wait([previous])
    try:
        await commit()
    except Exception as e:
        log.warning("job=%s could not commit the training volume: %s: %s", job_id, type(e).__name__, e)


def parse_training(settings: Settings, payload: Any, *, default_id: str | None = None) -> Job | ShardRef:
    """What the `train` function was asked to run: a training job's shard reference (what the API spawns)
    or a whole training Job document. InputError for anything else, an inference job included."""
    if is_shard_ref(payload):
        try:
            work: Job | ShardRef = ShardRef.model_validate(payload)
        except ValidationError as e:
            raise InputError([Issue(f"not a valid shard reference: {e.errors()[0]['msg']}", field="shard")]
                             ) from None
    else:
        doc = payload
        if default_id and isinstance(doc, dict) and not doc.get("id"):  # named after its FunctionCall
            doc = {**doc, "id": default_id}
        # the trainer loads whichever base the job names: no served model to check it against
        work = parse_job_document(doc, limits=Limits.from_settings(settings), any_model=True,
                                  tasks=load_tasks(settings.task_presets))
    if not is_training(work):
        raise InputError([Issue("not a training job: LLMJobs.run runs it", field="training")])
    return work


async def train_to_end(settings: Settings, payload: Any, *, default_id: str | None = None,
                       trainer: Trainer | None = None, store: Store | None = None,
                       commit: VolumeCall | None = None, reload: VolumeCall | None = None) -> dict[str, Any]:
    """Run a training job to its end (the `train` function); returns its final event. Raises JobFailed on a
    `failed` outcome, so Modal retries the call; the retry resumes from the last checkpoint on the volume.

    `reload` runs first, so a warm container resumes from what another one committed; `commit` as
    `VolumeTrainer` says. Input that is no training job returns a failed final event, recorded, with no retry.
    """
    own_store = store is None
    store = store or open_store(settings)
    final: FinalEvent | None = None
    try:
        try:
            work = parse_training(settings, payload, default_id=default_id)
        except InputError as e:
            job_id = _payload_id(payload)
            reason = f"invalid input: {e}"
            if job_id:
                await record_outcome(store, job_id, Outcome.failed, Summary.empty(0, reason),
                                     retry_s=settings.store_retry_s)
            return FinalEvent.failed(job_id or default_id or "", reason).model_dump(mode="json")
        with log_context(request=default_id, **work_ids(work)):  # every line of the run names its job
            await reload_quietly(reload, "training")
            async for event in VolumeTrainer(trainer or Trainer(settings), commit).run(work, store):
                if isinstance(event, FinalEvent):
                    final = event
    finally:
        if own_store:
            await store.close()
    assert final is not None, "every training run ends with a final event"
    if final.outcome is Outcome.failed:
        raise JobFailed(f"job {final.job_id} failed: {final.summary.reason or 'failed'}")
    return final.model_dump(mode="json")


def _payload_id(payload: Any) -> str | None:
    """The job id input names, if it names one (a shard reference's is its job's)."""
    doc = payload.get("job") if isinstance(payload, dict) and is_shard_ref(payload) else payload
    job_id = doc.get("id") if isinstance(doc, dict) else None
    return job_id if isinstance(job_id, str) else None


async def drain_train_lane(settings: Settings, *, trainer: Trainer | None = None, store: Store | None = None,
                           commit: VolumeCall | None = None, reload: VolumeCall | None = None) -> dict[str, Any]:
    """Run the queue's `train` lane dry, one training job at a time (the `drain_train` function). A worker with
    no engine takes that lane only; the queue retries a job that failed, and a redelivered one resumes from
    its last committed checkpoint."""
    from handler.worker import Worker

    own_store = store is None
    store = store or open_store(settings)
    queue = JobQueue.from_settings(settings)
    try:
        await reload_quietly(reload, "training")
        worker = Worker(None, queue, store, concurrency=1, lease_s=settings.lease_s, drain=True,
                        store_retry_s=settings.store_retry_s,
                        trainer=VolumeTrainer(trainer or Trainer(settings), commit))
        stats = await worker.run()
    finally:
        await queue.close()
        if own_store:
            await store.close()
    return _stats(stats)


# ## The queue (the Cron and LLMJobs.drain)


async def drain_queue(service: JobService) -> dict[str, Any]:
    """Run the Upstash queue dry on this engine (LLMJobs.drain). Training jobs wait in the queue's `train`
    lane, which this worker (no trainer) never takes: `drain_train` does."""
    from handler.worker import Worker

    s = service.settings
    queue = JobQueue.from_settings(s)
    try:
        worker = Worker(service.engine, queue, service.store, concurrency=s.jobs_per_worker, lease_s=s.lease_s,
                        drain=True, limits=service.limits, store_retry_s=s.store_retry_s,
                        page_items=s.read_page_items, chunk_size=s.default_chunk_size,
                        chunk_interval_s=s.default_chunk_interval_s)
        stats = await worker.run()
    finally:
        await queue.close()
    return _stats(stats)


def _stats(stats: Any) -> dict[str, Any]:
    return {"done": stats.done, "failed": stats.failed, "cancelled": stats.cancelled,
            "dead_lettered": stats.dead_lettered, "released": stats.released}


#: something of Modal's the Cron calls: a spawn (its FunctionCall's id) or a look at a function's backlog
Spawn = Callable[[], Awaitable[str]]
Backlog = Callable[[], Awaitable[int]]


async def check_queue(settings: Settings, *, drain: Spawn, drain_train: Spawn, train_backlog: Backlog
                      ) -> dict[str, Any]:
    """The Cron's look at the queue, from a CPU container: wake a GPU only for work it would take.

    Inference work (`queued_jobs`) spawns `drain` (LLMJobs.drain). Training jobs in the `train` lane spawn
    `drain_train` on a training GPU, unless a `drain_train` call already waits for a container
    (`train_backlog`): it will take them, and a training job holds its GPU for hours, so one spawn a tick
    would pile up calls that each boot a GPU only to find the lane empty."""
    counts = await queue_counts(settings)
    out: dict[str, Any] = {"queued": counts["inference"], "drained": False}
    if counts["inference"]:
        out.update(drained=True, call_id=await drain())
    if counts["train"]:
        out["queued_train"] = counts["train"]
        if not await train_backlog():
            out["train_call_id"] = await drain_train()
    return out


async def queued_jobs(settings: Settings) -> int:
    """Jobs the inference class can drain: queued at high or default priority, or waiting out a retry backoff.
    The `train` lane does not count: no inference container takes it, so training jobs alone never boot vLLM.
    (A training job waiting out a retry does count: the queue does not say which lane a retry goes back to.)"""
    return (await queue_counts(settings))["inference"]


async def queue_counts(settings: Settings) -> dict[str, int]:
    """`inference`: what `queued_jobs` counts; `train`: training jobs queued in the `train` lane.

    Leases that expired (their container died) are handed back first, to their lanes: with no worker
    running, nobody else would, and the job would never be counted again."""
    queue = JobQueue.from_settings(settings)
    try:
        await queue.reap()
        stats = await queue.stats()
    finally:
        await queue.close()
    return {"inference": stats["queued_high"] + stats["queued_default"] + stats["retrying"],
            "train": stats["queued_train"]}
