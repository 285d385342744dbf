"""What a platform's handler needs: one engine per process, input validation, jobs as event streams.

RunPod's worker, Modal's class and the local RunPod harness all go through `JobService`:

    service = JobService.boot(settings)          # once per process, before the first job
    job = service.parse(payload)                 # InputError names the field
    async for event in service.events(job):      # ChunkEvent..., FinalEvent (durable first)

The engine is booted once per process and shared by every job the platform runs at once
(`settings.jobs_per_worker`); results go to the store Settings configure.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from pydantic import ValidationError

from handler.engine.base import Engine
from handler.evals import EvalHook
from handler.evals import ended as eval_ended
from handler.rollup import conclude
from handler.runner import run_job
from handler.training.run import Trainer, is_training
from shared.contracts.compat import from_worker_vllm, is_worker_vllm
from shared.contracts.errors import InputError, Issue
from shared.contracts.events import Event, FinalEvent, Outcome
from shared.contracts.inputs import parse_job_document
from shared.contracts.models import Job, Summary
from shared.contracts.prepare import Limits
from shared.contracts.settings import Settings
from shared.contracts.shards import ShardRef, is_shard_ref
from shared.contracts.tasks import load_tasks
from shared.stores import Store, open_store
from shared.stores.base import record_outcome


class JobService:
    _process: ClassVar[JobService | None] = None
    _boot_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, engine: Engine | None, settings: Settings, *, store: Store | None = None):
        """`engine` None: a training-only worker (INFERENCE_JOBS=false), which refuses inference jobs."""
        self.engine = engine
        self.settings = settings
        self.limits = Limits.from_settings(settings)
        self._store = store
        self._trainer: Trainer | None = None
        #: a job sent straight to the platform (RunPod's /run, a Modal call) may name a task too
        self.tasks = load_tasks(settings.task_presets)

    # ## One per process

    @classmethod
    def boot(cls, settings: Settings) -> JobService:
        """The process's service, booting its engine the first time (blocking: call it before the loop runs)."""
        with cls._boot_lock:
            if cls._process is None and not settings.inference_jobs:  # training only: no engine, the GPU is free
                cls._process = cls(None, settings)
            if cls._process is None:
                from handler.engine.vllm_engine import VLLMEngine

                cls._process = cls(VLLMEngine.boot(settings), settings)
            return cls._process

    @classmethod
    async def start(cls, settings: Settings) -> JobService:
        """`boot` from inside a running event loop, without blocking it."""
        if cls._process is not None:
            return cls._process
        return await asyncio.wait_for(asyncio.to_thread(cls.boot, settings), settings.engine_boot_timeout_s)

    @classmethod
    def adopt(cls, service: JobService | None) -> None:
        """Make `service` the process's one (an embedding app or a test that booted its own engine)."""
        with cls._boot_lock:
            cls._process = service

    # ## Jobs

    @property
    def store(self) -> Store:
        if self._store is None:  # created lazily, in the loop that uses it
            self._store = open_store(self.settings)
        return self._store

    def parse(self, payload: Any, *, default_id: str | None = None) -> Job | ShardRef:
        """What a platform's input asks to run: a shard of a staged job (what our dispatchers send), or a
        whole Job document or a worker-vllm request (a caller of the platform's own API).

        `default_id` (the platform's request id) names the job when the input gives no `id`, so
        the platform's id finds the job in the store too.
        """
        if is_shard_ref(payload):
            try:
                return ShardRef.model_validate(payload)
            except ValidationError as e:
                raise InputError([Issue(f"not a valid shard reference: {e.errors()[0]['msg']}", field="shard")]
                                 ) from None
        doc = from_worker_vllm(payload) if is_worker_vllm(payload) else payload
        if default_id and isinstance(doc, dict) and not doc.get("id"):
            doc = {**doc, "id": default_id}
        served = self.engine.served_models if self.engine is not None else frozenset()
        return parse_job_document(doc, limits=self.limits, served_models=served, any_model=self.engine is None,
                                  tasks=self.tasks)

    async def refuse(self, job_id: Any, reason: str) -> None:
        """Record a submitted job whose input this worker refuses as failed (when the store knows it),
        so its readers see it end. An id the store does not know records nothing."""
        if isinstance(job_id, str) and job_id:
            summary = Summary.empty(0, reason)
            await record_outcome(self.store, job_id, Outcome.failed, summary, retry_s=self.settings.store_retry_s)

    async def events(self, job: Job | ShardRef) -> AsyncIterator[Event]:
        """Run `job` (or one shard) through the runner with the store: chunks as they are stored, then
        the job's final event, when this run ended the job (a shard of several: handler/rollup.py)."""
        s = self.settings
        if is_training(job):  # a training job (handler/training/run.py)
            async for event in self.train(job):
                yield event
            return
        if self.engine is None:
            reason = "this worker runs only training jobs (INFERENCE_JOBS=false): send inference jobs to another"
            await self.refuse(job.job_id, reason)
            yield FinalEvent.failed(job.job_id, reason)
            return
        # an eval run's job is scored as its chunks are stored (handler/evals.py)
        hook = await EvalHook.for_work(self.store, job, retry_s=s.store_retry_s, engine=self.engine)
        async for event in run_job(job, self.engine, store=self.store, limits=self.limits,
                                   chunk_size=s.default_chunk_size, chunk_interval_s=s.default_chunk_interval_s,
                                   store_retry_s=s.store_retry_s, page_items=s.read_page_items,
                                   on_stored=hook and hook.scored):
            if isinstance(event, FinalEvent):
                ended = await conclude(self.store, job, event, retry_s=s.store_retry_s)
                await eval_ended(hook, ended)
                yield ended if ended is not None else event
                continue
            yield event

    @property
    def trainer(self) -> Trainer | None:
        """What runs training jobs here (None: TRAIN_JOBS is off)."""
        if self._trainer is None and self.settings.train_jobs:
            self._trainer = Trainer(self.settings)
        return self._trainer

    async def train(self, job: Job | ShardRef) -> AsyncIterator[Event]:
        """A training job's events; a worker that does not train refuses it (recorded failed)."""
        if self.trainer is None:
            reason = "this worker does not run training jobs (TRAIN_JOBS=false): send them to one that does"
            await self.refuse(job.job_id, reason)
            yield FinalEvent.failed(job.job_id, reason)
            return
        async for event in self.trainer.run(job, self.store):
            yield event

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None
