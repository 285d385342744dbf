"""The job lifecycle: submit, get, list, results, follow and cancel, in one place.

    lifecycle = JobLifecycle(store, dispatcher, settings)
    accepted = await lifecycle.submit(job)          # idempotent on job.id
    async for ev in lifecycle.follow(job.id):       # StreamEvent(id, Event) ... until `final`
    await lifecycle.cancel(job.id)

The HTTP API's routes, the SDK's local backend and the CLI's store commands are thin layers over
this class, so a job behaves the same whichever door it came in by (docs/architecture.md,
"Lifecycle"). It imports no web framework.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from shared.contracts.errors import ConfigError, InputError, Issue, NotFound
from shared.contracts.events import Outcome
from shared.contracts.models import Item, Job, JobOptions, JobRecord, JobStatus, Rejection, Result, Summary
from shared.contracts.settings import Settings
from shared.contracts.shards import plan_shards
from shared.server.dispatch import Dispatcher
from shared.server.estimates import Estimator, Throughput
from shared.server.events import StreamEvent, follow, never
from shared.server.models import Serving, serving
from shared.stores.base import Store, record_outcome, retrying


@dataclass(frozen=True, slots=True)
class Accepted:
    job: Job
    status: JobStatus
    #: False when a job with this id was known already
    created: bool
    #: False when nothing new was started (the known job is queued, running or completed)
    dispatched: bool
    #: the job's items (for a job of an uploaded file, its lines; `job` has no items then)
    total: int = 0


@dataclass(frozen=True, slots=True)
class Cancelled:
    record: JobRecord
    #: True: it had not started and never will; False: a running job stops at its next chunk
    stopped_before_start: bool


class JobLifecycle:
    def __init__(self, store: Store, dispatcher: Dispatcher | None, settings: Settings):
        """`dispatcher=None` gives a reader (get, list, results, follow from the store)."""
        self.store, self._dispatcher, self.settings = store, dispatcher, settings
        self.estimator = Estimator(store, default_items_per_s=settings.estimate_items_per_s,
                                   sample_jobs=settings.estimate_sample_jobs, cache_s=settings.estimate_cache_s)

    @property
    def dispatcher(self) -> Dispatcher:
        if self._dispatcher is None:
            raise ConfigError("this lifecycle only reads jobs: it was given no dispatcher")
        return self._dispatcher

    async def submit(self, job: Job) -> Accepted:
        """Record the job as queued, stage its items in the store, and dispatch its shards. A known id
        that is queued, running or completed starts nothing (created=False); a failed or cancelled one
        runs again and resumes.

        A job whose shard reference its dispatcher's transport cannot carry (over Upstash's or RunPod's
        size limit: its options, never its items, travel) raises PayloadTooLarge before anything is
        recorded or sent."""
        if job.training is not None:
            await self._check_adapter_name(job)
        return await self._submit(job, job.total, lambda: self._stage(job))

    async def _check_adapter_name(self, job: Job) -> None:
        """A training job may replace an adapter only if its owner made it: adapter names are the
        deployment's (batch jobs name them), so another owner's, or one an operator put by hand, is refused
        (an InputError) unless an admin (no owner) submits it."""
        assert job.training is not None
        name = job.training.adapter
        existing = await self.store.get_adapter(name)
        if existing is None or job.owner is None:
            return
        maker = await self.store.get_job(existing.job_id) if existing.job_id else None
        if maker is None or maker.owner != job.owner:
            raise InputError([Issue(f"adapter '{name}' exists and is not yours: train under another name",
                                    field="training.adapter")])

    async def submit_file(self, options: JobOptions, file_id: str) -> Accepted:
        """A job whose items are an uploaded file's lines (an OpenAI batch): the same as `submit`, with
        the items copied from the file inside the store (shared/contracts/files.py)."""
        file = await self.store.get_file(file_id)
        if file is None or (options.owner is not None and file.owner != options.owner):  # not theirs: not there
            raise NotFound(f"no file {file_id!r}", status=404)
        if file.status != "processed":
            raise InputError([Issue(f"file {file_id!r} is {file.status}" + (
                f": {file.status_details}" if file.status_details else ""), field="input_file_id")])
        job = Job.model_validate(options.model_dump(by_alias=True))
        s = self.settings

        async def copy() -> None:
            await retrying(lambda: self.store.copy_file_items(file_id, job.id), within_s=s.store_retry_s)

        return await self._submit(job, file.lines, copy)

    async def _submit(self, job: Job, total: int, stage: Callable[[], Awaitable[None]]) -> Accepted:
        dispatcher = self.dispatcher  # a reader refuses here, before anything is recorded
        refs = plan_shards(job, total, self.settings.shard_size)
        await asyncio.to_thread(dispatcher.check, refs[0])  # the references differ only in their range
        created = await self.store.accept(job, total=total)
        if not created:
            record = await self.get(job.id)
            if record.status not in (JobStatus.failed, JobStatus.cancelled):
                return Accepted(job, record.status, created=False, dispatched=False, total=record.total)
            # waiting to run again: readers who follow it now wait for the new run's events
            await self._record(record, Outcome.stopped, "submitted again; stored results are kept")
        try:
            await stage()  # idempotent: a job submitted again stages nothing new
            await dispatcher.submit(refs)
        except Exception as e:  # recorded failed (a re-submit dispatches it again), then raised as it came
            await record_outcome(self.store, job.id, Outcome.failed,
                                 Summary.empty(total, f"could not dispatch: {type(e).__name__}: {e}"),
                                 retry_s=self.settings.store_retry_s)
            raise
        return Accepted(job, JobStatus.queued, created=created, dispatched=True, total=total)

    async def _stage(self, job: Job) -> None:
        """The job's items, then the ones refused at the edge, into the store, a batch at a time."""
        rows: list[Item | Rejection] = [*job.items, *job.rejected]
        batch, s = self.settings.stage_batch_items, self.settings
        for start in range(0, len(rows), batch):
            part = rows[start:start + batch]
            await retrying(lambda start=start, part=part: self.store.stage_items(job.id, start, part),
                           within_s=s.store_retry_s)

    async def get(self, job_id: str) -> JobRecord:
        record = await self.store.get_job(job_id)
        if record is None:
            raise NotFound(f"no job {job_id!r}", status=404)
        return record

    async def list(self, *, limit: int = 50, status: JobStatus | None = None, owner: str | None = None,
                   after: str | None = None) -> list[JobRecord]:
        """The most recent jobs first: `owner`'s (None: everyone's), after the job `after` (keyset)."""
        return await self.store.list_jobs(limit=limit, status=status, owner=owner, after=after)

    async def results(self, job_id: str, *, after: str | None = None, limit: int = 100
                      ) -> tuple[list[Result], str | None]:
        """One page ordered by custom_id, and the cursor of the next page (None on the last)."""
        await self.get(job_id)
        page = await self.store.results(job_id, after=after, limit=limit)
        return page, page[-1].custom_id if len(page) == limit else None

    def follow(self, job_id: str, last_id: str | None = None, *,
               stop: Callable[[], Awaitable[bool]] = never) -> AsyncIterator[StreamEvent]:
        """The job's events after `last_id` until its `final` event (see shared/server/events.py)."""
        source = self._dispatcher.events if self._dispatcher is not None else None
        s = self.settings
        return follow(source, self.store, job_id, last_id, poll_s=s.sse_poll_s, idle_poll_s=s.sse_idle_poll_s,
                      idle_after_s=s.sse_idle_after_s, stop=stop)

    async def cancel(self, job_id: str) -> Cancelled:
        record = await self.get(job_id)
        if record.status.terminal:
            return Cancelled(record, stopped_before_start=False)
        stopped = await self.dispatcher.cancel(job_id)
        record = await self.get(job_id)  # again: a run that began meanwhile records its own outcome
        # `stopped`: none of it runs any more (no shard is running), so nobody else records the outcome
        before_start = stopped and not record.status.terminal
        if before_start:
            ran = record.completed + record.failed
            await self._record(record, Outcome.cancelled,
                               "cancelled while it waited to run again" if ran else "cancelled before it ran")
            record = await self.get(job_id)
        return Cancelled(record, stopped_before_start=before_start)

    async def _record(self, record: JobRecord, outcome: Outcome, reason: str) -> None:
        """An outcome decided here (no run): the stored counters stay in its summary."""
        summary = Summary.empty(record.total, reason).model_copy(
            update={"completed": record.completed, "failed": record.failed})
        await record_outcome(self.store, record.id, outcome, summary, retry_s=self.settings.store_retry_s)

    async def throughput(self, model: str | None, task: str | None = None) -> Throughput:
        """The model's throughput, measured over its last completed jobs (shared/server/estimates.py); for an
        estimate of a job's time: `throughput(job.model).seconds(total)`. A job that names no model runs on
        the deployment's, and its worker records it under that model's name."""
        return await self.estimator.throughput(model or self.settings.served_model, task)

    async def serving(self) -> Serving:
        """The model and the LoRA adapters this deployment serves (shared/server/models.py)."""
        engine = getattr(self._dispatcher, "engine", None)  # the local dispatcher's, once it booted
        return await serving(self.settings, self.store, engine)

    async def close(self) -> None:
        if self._dispatcher is not None:
            await self._dispatcher.close()
        await self.store.close()
