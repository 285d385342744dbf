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
        """A training job's lane is "train"; else the job's own priority when it asks for "high", else this
        dispatcher's (the CLI's --priority)."""
        if ref.job.training is not None:
            return "train"
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
        self._trainer: Any = None
        #: it boots its own engine (none was given): closing it closes the engine
        self._owns_engine = service is None
        #: the GPUs its engine runs on, looked up once (`_gpus`); False: not yet
        self._gpus: Any = False

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
        self.events.forget(job.job_id)  # a job submitted again: a new run, a new stream (as the queue's resubmit)
        self._tasks[job.job_id] = asyncio.create_task(self._run(job), name=f"job-{job.job_id}")

    def _events(self, job: ShardRef) -> Any:
        """A training job's trainer, booting no engine (handler/training/run.py); else the service's runner."""
        if job.job.training is not None:
            from handler.training.run import Trainer

            if self._trainer is None:
                self._trainer = Trainer(self.settings)
            if self.settings.train_jobs:
                return self._trainer.run(job, self.store)
        return None

    async def _run(self, job: ShardRef) -> None:
        try:
            async with self._slots:
                events = self._events(job)
                if events is None:
                    events = (await self.service()).events(job)
                async for event in events:
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
        if self._gpus is False:  # they do not change: looked up once, off the loop
            self._gpus = await asyncio.to_thread(_gpus)
        details: dict[str, Any] = {"engine": service.engine.model_name, "running": len(self._tasks)}
        if self._gpus is not None:  # nothing on a CPU
            details["gpu"] = self._gpus
        return details

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self._owns_engine and self._service is not None and self._service.engine is not None:
            # the engine this dispatcher booted (`llm-jobs serve`): its vLLM processes end with it, never orphaned;
            # the process's next one boots afresh
            from handler.service import JobService

            engine = self._service.engine
            if JobService._process is not None and JobService._process.engine is engine:
                JobService.adopt(None)
            await engine.close()


#: the prefix of a training job's RunPod request id in the store (`set_dispatch_ref`): it was sent where training
#: jobs go, so that is where /cancel goes. The RunPod handler writes the same (handler/platforms/runpod.py)
TRAIN_REF = "train:"


class RunpodDispatcher:
    """POSTs each shard's reference to a RunPod endpoint's /run; the workers there write to the same
    store. RunPod's autoscaler fans the shards out (the endpoint's max workers).

    One /run per shard. RunPod has no idempotency key and no way to find a request by its
    input, so a /run whose answer never came is not sent again (`RunpodUnsure`, raised: the
    lifecycle records the job failed, saying it may have started; a worker that did get it records
    it running when it begins). The RunPod request ids are kept in the store (`set_dispatch_ref`,
    comma-separated, one per shard), not in this process, so any API replica, or this one after a
    restart, cancels the run.

    Training jobs (one shard each) go to `train_client`, a second endpoint (RUNPOD_TRAIN_ENDPOINT_ID: the
    same image with TRAIN_JOBS=true on a training GPU), when there is one; else to the main endpoint, whose
    workers must then train too. Their request id is kept as `train:<id>`, so /cancel goes there as well.
    """

    name = "runpod"
    events = None

    def __init__(self, client: RunpodClient, store: Store, *, train_client: RunpodClient | None = None,
                 retry_s: float = DEFAULTS.store_retry_s):
        self.client, self.store, self.retry_s = client, store, retry_s
        self.train_client = train_client

    def _client(self, training: bool) -> RunpodClient:
        """Where a job goes (training: the training endpoint, when there is one)."""
        return self.train_client if training and self.train_client is not None else self.client

    def check(self, ref: ShardRef) -> None:
        """PayloadTooLarge when the reference's /run body is over RunPod's limit."""
        run_body(ref.wire())

    async def submit(self, refs: Sequence[ShardRef]) -> None:
        job_id = refs[0].job_id
        training = refs[0].job.training is not None
        client = self._client(training)
        run_ids: list[str] = []
        try:
            for ref in refs:
                run_ids.append((await client.run(ref.wire()))["id"])
        except (RunpodError, PayloadTooLarge):
            for run_id in run_ids:  # the job is recorded failed: stop the shards that went out
                with contextlib.suppress(RunpodError):
                    await client.cancel(run_id)
            with contextlib.suppress(StoreError):  # no request id is known: an earlier run's is stale
                await self.store.set_dispatch_ref(job_id, None)
            raise
        ref_ids = ",".join(f"{TRAIN_REF}{run_id}" if training else run_id for run_id in run_ids)
        try:
            await retrying(lambda: self.store.set_dispatch_ref(job_id, ref_ids), within_s=self.retry_s)
        except StoreError:  # the job runs; failing it here would invite a second /run
            log.exception("job=%s runs on RunPod as %s, but the store would not keep that id: cancel it there",
                          job_id, ref_ids)

    async def cancel(self, job_id: str) -> bool:
        """Cancel every shard's request, each on the endpoint it went to; True when RunPod cancelled them all."""
        ref_ids = await self.store.get_dispatch_ref(job_id)
        if ref_ids is None:
            return False
        answers = []
        for ref_id in filter(None, ref_ids.split(",")):
            training = ref_id.startswith(TRAIN_REF)
            answers.append(await self._client(training).cancel(ref_id.removeprefix(TRAIN_REF)))
        return bool(answers) and all(a.get("status") == "CANCELLED" for a in answers)

    async def ready(self) -> dict[str, Any]:
        out = {"runpod": await self.client.health()}
        if self.train_client is not None:
            out["runpod_train"] = await self.train_client.health()
        return out

    async def close(self) -> None:
        await self.client.aclose()
        if self.train_client is not None:
            await self.train_client.aclose()


class ModalDispatcher:
    """Spawns `LLMJobs.run` once per shard on the deployed Modal app (its containers fan them out, up
    to the class's `max_containers`); each writes to the same store. A training job's one shard is spawned
    on the `train` function instead: its own GPU and the training volume, and no vLLM (modal_app.py)."""

    name = "modal"
    events = None

    def __init__(self, cls: Any, train: Any):
        """`cls`: the LLMJobs class, from modal_app.py or `modal.Cls.from_name(app, "LLMJobs")`; `train`: the
        training function, from modal_app.py or `modal.Function.from_name(app, "train")`."""
        self._cls = cls
        self._train = train
        self._calls: dict[str, list[Any]] = {}  # job id -> one FunctionCall per shard

    def check(self, ref: ShardRef) -> None:
        """Modal's arguments carry a reference, which does not grow with the job."""

    async def submit(self, refs: Sequence[ShardRef]) -> None:
        if refs[0].job.training is not None:
            calls = [await self._train.spawn.aio(ref.wire()) for ref in refs]
        else:
            calls = [await self._cls().run.spawn.aio(ref.wire()) for ref in refs]
        self._calls[refs[0].job_id] = calls

    async def cancel(self, job_id: str) -> bool:
        """Cancel every call of the job (`LLMJobs.run` or `train` alike); its runner records `cancelled`."""
        calls = self._calls.get(job_id)
        if not calls:
            return False
        for call in calls:
            await call.cancel.aio()
        return True

    async def ready(self) -> dict[str, Any]:
        await self._cls.hydrate.aio()
        await self._train.hydrate.aio()
        return {"modal": "reachable"}

    async def close(self) -> None: ...


def make_dispatcher(settings: Settings, store: Store) -> Dispatcher:
    if settings.dispatcher == "queue":
        return QueueDispatcher(JobQueue.from_settings(settings))
    if settings.dispatcher == "runpod":
        if not (settings.runpod_endpoint_id and settings.runpod_api_key):
            raise ConfigError("DISPATCHER=runpod needs RUNPOD_ENDPOINT_ID and RUNPOD_API_KEY")
        key = settings.runpod_api_key.get_secret_value()

        def client(endpoint_id: str) -> RunpodClient:
            return RunpodClient(endpoint_id, key, base_url=settings.runpod_base_url, timeout_s=settings.http_timeout_s)

        train = settings.runpod_train_endpoint_id
        return RunpodDispatcher(client(settings.runpod_endpoint_id), store,
                                train_client=client(train) if train else None, retry_s=settings.store_retry_s)
    if settings.dispatcher == "modal":
        import modal

        return ModalDispatcher(modal.Cls.from_name(settings.modal_app_name, settings.modal_class_name),
                               modal.Function.from_name(settings.modal_app_name, settings.modal_train_function))
    return LocalDispatcher(settings, store)


def _gpus() -> dict[str, Any] | list[dict[str, Any]] | None:
    """The CUDA GPUs this process sees (the local engine's), for /readyz: `{"name", "memory_gib"}` for one
    GPU, a list of them in device order for several, None on a CPU. torch is imported here, never at the
    API's import: only the local dispatcher calls it, once its engine (which has loaded torch) runs here."""
    try:
        import torch
    except ImportError:
        return None
    cuda = torch.cuda
    if not cuda.is_available():
        return None
    found = [{"name": cuda.get_device_name(i),
              "memory_gib": round(cuda.get_device_properties(i).total_memory / 2**30, 1)}
             for i in range(cuda.device_count())]
    if not found:
        return None
    return found[0] if len(found) == 1 else found
