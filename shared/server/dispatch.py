"""Where a staged job goes: DISPATCHER=queue | runpod | modal | local.

The job's items are in the store before a dispatcher sees it (`JobLifecycle.submit`). A dispatcher
gets the job's shards (`ShardRef`s: the job's options and an idx range, shared/contracts/shards.py)
and sends each one's wire form: one queue entry, one RunPod /run or one Modal spawn per shard, so
workers take them independently. Nothing that grows with the job travels. The local one runs the
whole job here, reading its items from the store page by page.

`check(ref)` measures a shard's reference as its transport would carry it (queue: Upstash's 10 MB a
request; runpod: RunPod's 10 MiB /run body) and raises `PayloadTooLarge`; the lifecycle calls it
before anything is recorded. A reference only grows with the job's options (its template, schema
and metadata), so this is rare, and the message says which limit it hit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from shared.contracts.errors import ConfigError, LLMJobsError, PayloadTooLarge, StoreError
from shared.contracts.events import FinalEvent, Outcome
from shared.contracts.models import Summary
from shared.contracts.settings import DEFAULTS, Settings
from shared.contracts.shards import ShardRef
from shared.queue.runpod import RunpodClient, RunpodError, run_body
from shared.queue.upstash import JobQueue, Priority
from shared.server.events import EventSource, MemoryEvents, QueueEvents, final_event
from shared.stores import Store
from shared.stores.base import record_outcome, retrying

log = logging.getLogger("llm_jobs.api")


class Dispatcher(Protocol):
    name: str
    #: where this dispatcher's jobs publish their events; None: the API makes them from the store
    events: EventSource | None

    def check(self, ref: ShardRef) -> None:
        """Raise PayloadTooLarge when the transport cannot carry this reference (see the module docstring)."""

    async def submit(self, refs: Sequence[ShardRef]) -> None:
        """Send every shard of one job (a job known to the dispatcher already is left as it is)."""

    async def cancel(self, job_id: str) -> bool:
        """Ask every shard of the job to stop; True when none of it runs any more (what waited was removed),
        so nothing else will record the outcome: the lifecycle records it `cancelled`."""

    async def ready(self) -> dict[str, Any]:
        """Details for /readyz; raises LLMJobsError when jobs cannot be run."""

    async def close(self) -> None: ...


class QueueDispatcher:
    name = "queue"

    def __init__(self, queue: JobQueue, *, priority: Priority = "default"):
        self.queue = queue
        self.priority: Priority = priority
        self.events = QueueEvents(queue)

    def _priority(self, ref: ShardRef) -> Priority:
        """The job's own priority when it asks for "high"; else this dispatcher's (the CLI's --priority)."""
        return "high" if ref.job.priority == "high" else self.priority

    def check(self, ref: ShardRef) -> None:
        """PayloadTooLarge when the reference is over Upstash's request limit."""
        self.queue.check(ref, self._priority(ref))

    async def submit(self, refs: Sequence[ShardRef]) -> None:
        # a shard the queue knows is in its hands (queued, running or waiting out a retry), unless it
        # was cancelled or dead-lettered: then it is queued again with fresh attempts
        for ref in refs:
            if not await self.queue.enqueue(ref, self._priority(ref)):
                await self.queue.resubmit(ref, self._priority(ref))

    async def cancel(self, job_id: str) -> bool:
        return await self.queue.cancel(job_id)

    async def ready(self) -> dict[str, Any]:
        return {"queue": await self.queue.stats()}

    async def close(self) -> None:
        await self.queue.close()


class LocalDispatcher:
    """Runs jobs in this process on one engine (booted on first use), `jobs_per_worker` at a time."""

    name = "local"

    def __init__(self, settings: Settings, store: Store, service: Any = None):
        self.settings, self.store = settings, store
        self.events = MemoryEvents(maxlen=settings.events_maxlen)  # a short tail per job, never every result
        self._service = service
        self._boot_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(settings.jobs_per_worker)
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def service(self) -> Any:
        async with self._boot_lock:
            if self._service is None:
                from handler.service import JobService  # the engine: only when this dispatcher is used

                self._service = JobService(
                    (await JobService.start(self.settings)).engine, self.settings, store=self.store)
        return self._service

    @property
    def engine(self) -> Any:
        """The engine, once it booted (None before: nothing boots it here)."""
        return self._service.engine if self._service is not None else None

    def check(self, ref: ShardRef) -> None:
        """Nothing travels: any reference fits."""

    async def submit(self, refs: Sequence[ShardRef]) -> None:
        """One engine here: the job runs as one shard, whatever SHARD_SIZE split it into."""
        first = refs[0]
        job = first.model_copy(update={"shard": 0, "shards": 1, "start": 0, "end": first.total})
        if job.job_id in self._tasks:
            return
        self._tasks[job.job_id] = asyncio.create_task(self._run(job), name=f"job-{job.job_id}")

    async def _run(self, job: ShardRef) -> None:
        try:
            async with self._slots:
                service = await self.service()
                async for event in service.events(job):
                    self.events.publish(job.job_id, event)
        except asyncio.CancelledError:
            raise  # the runner recorded `cancelled`; cancel() publishes the final event
        except Exception as e:  # a bug (or an engine that would not boot) must not take the API down
            log.exception("job=%s crashed in the local dispatcher", job.job_id)
            summary = Summary.empty(job.total, f"{type(e).__name__}: {e}")
            await record_outcome(self.store, job.job_id, Outcome.failed, summary,
                                 retry_s=self.settings.store_retry_s)
            self.events.publish(job.job_id, FinalEvent(job_id=job.job_id, outcome=Outcome.failed, summary=summary))
        finally:
            self._tasks.pop(job.job_id, None)

    async def cancel(self, job_id: str) -> bool:
        task = self._tasks.get(job_id)
        if task is None:
            return False
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        record = await self.store.get_job(job_id)
        if record is not None and record.status.terminal:
            self.events.publish(job_id, final_event(record))
        return True

    async def ready(self) -> dict[str, Any]:
        service = await self.service()
        if not service.engine.alive:
            raise LLMJobsError("the engine is dead")
        return {"engine": service.engine.model_name, "running": len(self._tasks), "gpu": await asyncio.to_thread(_gpu)}

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


class RunpodDispatcher:
    """POSTs each shard's reference to a RunPod endpoint's /run; the workers there write to the same
    store. RunPod's autoscaler fans the shards out (the endpoint's max workers).

    One /run per shard. RunPod has no idempotency key and no way to find a request by its
    input, so a /run whose answer never came is not sent again (`RunpodUnsure`, raised: the
    lifecycle records the job failed, saying it may have started; a worker that did get it records
    it running when it begins). The RunPod request ids are kept in the store (`set_dispatch_ref`,
    comma-separated, one per shard), not in this process, so any API replica, or this one after a
    restart, cancels the run.
    """

    name = "runpod"
    events = None

    def __init__(self, client: RunpodClient, store: Store, *, retry_s: float = DEFAULTS.store_retry_s):
        self.client, self.store, self.retry_s = client, store, retry_s

    def check(self, ref: ShardRef) -> None:
        """PayloadTooLarge when the reference's /run body is over RunPod's limit."""
        run_body(ref.wire())

    async def submit(self, refs: Sequence[ShardRef]) -> None:
        job_id = refs[0].job_id
        run_ids: list[str] = []
        try:
            for ref in refs:
                run_ids.append((await self.client.run(ref.wire()))["id"])
        except (RunpodError, PayloadTooLarge):
            for run_id in run_ids:  # the job is recorded failed: stop the shards that went out
                with contextlib.suppress(RunpodError):
                    await self.client.cancel(run_id)
            with contextlib.suppress(StoreError):  # no request id is known: an earlier run's is stale
                await self.store.set_dispatch_ref(job_id, None)
            raise
        ref_ids = ",".join(run_ids)
        try:
            await retrying(lambda: self.store.set_dispatch_ref(job_id, ref_ids), within_s=self.retry_s)
        except StoreError:  # the job runs; failing it here would invite a second /run
            log.exception("job=%s runs on RunPod as %s, but the store would not keep that id: cancel it there",
                          job_id, ref_ids)

    async def cancel(self, job_id: str) -> bool:
        """Cancel every shard's request; True when RunPod cancelled them all."""
        ref_ids = await self.store.get_dispatch_ref(job_id)
        if ref_ids is None:
            return False
        answers = [await self.client.cancel(run_id) for run_id in ref_ids.split(",") if run_id]
        return bool(answers) and all(a.get("status") == "CANCELLED" for a in answers)

    async def ready(self) -> dict[str, Any]:
        return {"runpod": await self.client.health()}

    async def close(self) -> None:
        await self.client.aclose()


class ModalDispatcher:
    """Spawns `LLMJobs.run` once per shard on the deployed Modal app (its containers fan them out, up
    to the class's `max_containers`); each writes to the same store."""

    name = "modal"
    events = None

    def __init__(self, cls: Any):
        """`cls`: the LLMJobs class, from modal_app.py or `modal.Cls.from_name(app, "LLMJobs")`."""
        import modal

        self._modal = modal
        self._cls = cls
        self._calls: dict[str, list[str]] = {}  # job id -> one FunctionCall id per shard

    def check(self, ref: ShardRef) -> None:
        """Modal's arguments carry a reference, which does not grow with the job."""

    async def submit(self, refs: Sequence[ShardRef]) -> None:
        calls = [await self._cls().run.spawn.aio(ref.wire()) for ref in refs]
        self._calls[refs[0].job_id] = [call.object_id for call in calls]

    async def cancel(self, job_id: str) -> bool:
        call_ids = self._calls.get(job_id)
        if not call_ids:
            return False
        for call_id in call_ids:
            await self._modal.FunctionCall.from_id(call_id).cancel.aio()
        return True

    async def ready(self) -> dict[str, Any]:
        await self._cls.hydrate.aio()
        return {"modal": "reachable"}

    async def close(self) -> None: ...


def make_dispatcher(settings: Settings, store: Store) -> Dispatcher:
    if settings.dispatcher == "queue":
        return QueueDispatcher(JobQueue.from_settings(settings))
    if settings.dispatcher == "runpod":
        if not (settings.runpod_endpoint_id and settings.runpod_api_key):
            raise ConfigError("DISPATCHER=runpod needs RUNPOD_ENDPOINT_ID and RUNPOD_API_KEY")
        return RunpodDispatcher(RunpodClient(settings.runpod_endpoint_id, settings.runpod_api_key.get_secret_value(),
                                             base_url=settings.runpod_base_url, timeout_s=settings.http_timeout_s),
                                store, retry_s=settings.store_retry_s)
    if settings.dispatcher == "modal":
        import modal

        return ModalDispatcher(modal.Cls.from_name(settings.modal_app_name, settings.modal_class_name))
    return LocalDispatcher(settings, store)


def _gpu() -> bool:
    """Does this process see a CUDA GPU (the local engine's)?"""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
