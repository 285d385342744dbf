"""Where a validated job goes: DISPATCHER=queue | runpod | modal | local.

Every dispatcher gets the validated Job and sends its one wire form (`Job.wire()`, rejected
items included) to the queue, RunPod's /run or Modal's spawn; the local one runs it here.

A dispatcher whose transport has a size limit (queue: Upstash's 10 MB a request; runpod: RunPod's
10 MB /run body) has `check(job)`: it measures the job as it would be sent and raises
`PayloadTooLarge`. `JobLifecycle.submit` calls it before the job is recorded, so a job too big to
send is refused (413) with nothing stored and nothing sent. `submit` measures again before sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from shared.contracts.errors import ConfigError, LLMJobsError, PayloadTooLarge, StoreError
from shared.contracts.events import FinalEvent, Outcome
from shared.contracts.models import Job, Summary
from shared.contracts.settings import DEFAULTS, Settings
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

    async def submit(self, job: Job) -> None: ...

    # Optional: `def check(self, job: Job) -> None`, raising PayloadTooLarge when the transport cannot
    # carry the job (see the module's docstring). The lifecycle calls it, in a thread, when it exists.

    async def cancel(self, job_id: str) -> bool:
        """Ask the job to stop; True if it was stopped before it started."""

    async def ready(self) -> dict[str, Any]:
        """Details for /readyz; raises LLMJobsError when jobs cannot be run."""

    async def close(self) -> None: ...


class QueueDispatcher:
    name = "queue"

    def __init__(self, queue: JobQueue, *, priority: Priority = "default"):
        self.queue = queue
        self.priority: Priority = priority
        self.events = QueueEvents(queue)

    def check(self, job: Job) -> None:
        """PayloadTooLarge when the job is over Upstash's request limit."""
        self.queue.check(job, self.priority)

    async def submit(self, job: Job) -> None:
        # a job the queue knows is in its hands (queued, running or waiting out a retry), unless it
        # was cancelled or dead-lettered: then it is queued again with fresh attempts
        if not await self.queue.enqueue(job, self.priority):
            await self.queue.resubmit(job, self.priority)

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

    async def submit(self, job: Job) -> None:
        if job.id in self._tasks:
            return
        self._tasks[job.id] = asyncio.create_task(self._run(job), name=f"job-{job.id}")

    async def _run(self, job: Job) -> None:
        try:
            async with self._slots:
                service = await self.service()
                async for event in service.events(job):
                    self.events.publish(job.id, event)
        except asyncio.CancelledError:
            raise  # the runner recorded `cancelled`; cancel() publishes the final event
        except Exception as e:  # a bug (or an engine that would not boot) must not take the API down
            log.exception("job=%s crashed in the local dispatcher", job.id)
            summary = Summary.empty(job.total, f"{type(e).__name__}: {e}")
            await record_outcome(self.store, job.id, Outcome.failed, summary, retry_s=self.settings.store_retry_s)
            self.events.publish(job.id, FinalEvent(job_id=job.id, outcome=Outcome.failed, summary=summary))
        finally:
            self._tasks.pop(job.id, None)

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
        return {"engine": service.engine.model_name, "running": len(self._tasks)}

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


class RunpodDispatcher:
    """POSTs the job to a RunPod endpoint's /run; the worker there writes to the same store.

    One /run per dispatch. RunPod has no idempotency key and no way to find a request by its
    input, so a /run whose answer never came is not sent again (`RunpodUnsure`, raised: the
    lifecycle records the job failed, saying it may have started; a worker that did get it records
    it running when it begins). The RunPod request id is kept in the store (`set_dispatch_ref`),
    not in this process, so any API replica, or this one after a restart, cancels the run.
    """

    name = "runpod"
    events = None

    def __init__(self, client: RunpodClient, store: Store, *, retry_s: float = DEFAULTS.store_retry_s):
        self.client, self.store, self.retry_s = client, store, retry_s

    def check(self, job: Job) -> None:
        """PayloadTooLarge when the job's /run body is over RunPod's limit."""
        run_body(job.wire())

    async def submit(self, job: Job) -> None:
        try:
            answer = await self.client.run(job.wire())
        except (RunpodError, PayloadTooLarge):
            with contextlib.suppress(StoreError):  # no request id is known: an earlier run's is stale
                await self.store.set_dispatch_ref(job.id, None)
            raise
        run_id = answer["id"]
        try:
            await retrying(lambda: self.store.set_dispatch_ref(job.id, run_id), within_s=self.retry_s)
        except StoreError:  # the job runs; failing it here would invite a second /run
            log.exception("job=%s runs on RunPod as %s, but the store would not keep that id: cancel it there",
                          job.id, run_id)

    async def cancel(self, job_id: str) -> bool:
        run_id = await self.store.get_dispatch_ref(job_id)
        if run_id is None:
            return False
        answer = await self.client.cancel(run_id)
        return answer.get("status") == "CANCELLED"

    async def ready(self) -> dict[str, Any]:
        return {"runpod": await self.client.health()}

    async def close(self) -> None:
        await self.client.aclose()


class ModalDispatcher:
    """Spawns `LLMJobs.run` on the deployed Modal app; it writes to the same store."""

    name = "modal"
    events = None

    def __init__(self, cls: Any):
        """`cls`: the LLMJobs class, from modal_app.py or `modal.Cls.from_name(app, "LLMJobs")`."""
        import modal

        self._modal = modal
        self._cls = cls
        self._calls: dict[str, str] = {}  # job id -> FunctionCall id

    async def submit(self, job: Job) -> None:
        call = await self._cls().run.spawn.aio(job.wire())
        self._calls[job.id] = call.object_id

    async def cancel(self, job_id: str) -> bool:
        call_id = self._calls.get(job_id)
        if call_id is None:
            return False
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
