"""The RunPod handler: an async generator the runpod SDK drives, one call per RunPod job.

What it yields, and how RunPod reports it:

- a valid job streams our events: one `chunk` event per stored chunk, then the `final` event.
  With `return_aggregate_stream`, `/status` ends COMPLETED with the list of every event, and
  `/stream` shows them as they come. Item errors live inside the results: the job completes.
- a shard of a staged job (what our dispatcher sends: `{"kind": "shard", ...}`, see
  shared/contracts/shards.py) reads its items from the store page by page, and its chunk events
  carry progress without results: the worker never holds a job's results (RunPod's aggregate
  keeps every yield until the request ends). Results are read from the store
  (`GET /v1/jobs/{id}/results`); the final event carries the summary.
- invalid input yields one `{"error": "invalid input: <field>: <message>; ..."}`. The SDK treats
  a yielded dict with `error` as the job's failure, so `/status` says FAILED with that message
  (and no traceback, which is what an exception would give).
- a job that fails (the engine died, the store was unreachable) yields its `final` event, so a
  `/stream` reader sees the summary, then `{"error": reason}`: FAILED with the reason. The
  results it stored stay in the store, and a re-run with the same id resumes.
- a worker-vllm request (`prompt` or `messages` plus `sampling_params`) yields one output in
  worker-vllm's shape, `{"choices": [{"tokens": [text]}], "usage": {"input", "output"}}`, or
  `{"error": ...}` if the item failed.
- RunPod's `/cancel` cancels the task running the generator: requests in flight are aborted and
  the job is recorded `cancelled`.
- a training job (handler/training/run.py) streams `train` events, then its `final` event, when this
  worker trains (TRAIN_JOBS=true); a worker with TRAIN_JOBS=false refuses it (failed). A training
  endpoint is this same image with INFERENCE_JOBS=false (no engine boots: the GPU is the trainer's),
  JOBS_PER_WORKER=1 (a job takes the whole GPU: RunPod starts another worker for the next one), an
  execution timeout as long as the training, and the network volume the inference endpoint mounts too
  (TRAINING_DIR, in the Dockerfile), so the adapters it trains are served from there; the API sends
  training jobs to it when RUNPOD_TRAIN_ENDPOINT_ID names it. The inference endpoint sets
  TRAIN_JOBS=false. A re-run of a failed or stopped training job resumes from its last checkpoint on
  the volume.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from handler.logs import work_ids
from handler.service import JobService
from handler.training.run import is_training
from shared.contracts.compat import is_worker_vllm
from shared.contracts.errors import InputError
from shared.contracts.events import ChunkEvent, FinalEvent, Outcome
from shared.contracts.models import Job, Result
from shared.contracts.shards import ShardRef
from shared.observability.context import log_context

log = logging.getLogger("llm_jobs.runpod")

#: how a training job's request id is kept in the store: the API's dispatcher sends /cancel for it to the
#: training endpoint (shared/server/dispatch.py `TRAIN_REF`, the same string: the handler cannot import it)
TRAIN_REF = "train:"


def set_sdk_log_level(level: str) -> None:
    """The runpod SDK logs at DEBUG by default, printing every yielded output (every result's text)
    to the worker's logs. Follow LOG_LEVEL instead, from INFO at least: even LOG_LEVEL=DEBUG must not
    put result text in the logs."""
    from runpod.serverless.modules.rp_logger import RunPodLogger

    RunPodLogger().set_level({"WARNING": "WARN", "DEBUG": "INFO"}.get(level, level))


class RunpodHandler:
    def __init__(self, service: JobService):
        self.service = service

    def concurrency(self, current: int) -> int:
        """RunPod's `concurrency_modifier`: jobs this worker takes at once (always an int, at least 1)."""
        del current
        if self.service.engine is not None and not self.service.engine.alive:
            return 1  # take nothing new in parallel on a dead engine; the next job fails fast
        return max(1, int(self.service.settings.jobs_per_worker))

    async def handle(self, rp_job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Every line logged while it runs carries RunPod's request id (`request`) and, once the input is
        read, the job's id and shard (shared/observability/context.py)."""
        request_id = rp_job.get("id")
        with log_context(request=request_id if isinstance(request_id, str) else None):
            payload = rp_job.get("input")
            try:
                job = self.service.parse(payload, default_id=rp_job.get("id"))
            except InputError as e:
                log.warning("runpod job=%s invalid input: %s", rp_job.get("id"), e)
                await self.service.refuse(payload.get("id") if isinstance(payload, dict) else None,
                                          f"invalid input: {e}")
                yield {"error": f"invalid input: {e}"}
                return
            with log_context(**work_ids(job)):
                async with contextlib.aclosing(self._run(rp_job, payload, job)) as outs:
                    async for out in outs:
                        yield out

    async def _run(self, rp_job: dict[str, Any], payload: Any, job: Job | ShardRef) -> AsyncIterator[dict[str, Any]]:
        log.info("runpod job=%s running %d item(s) as job %s", rp_job.get("id"), job.total, job.entry_id)
        if not job.sharded:  # a job of several shards: the dispatcher keeps every shard's request id
            await self._keep_request_id(job.job_id, rp_job.get("id"), training=is_training(job))
        if is_worker_vllm(payload):
            async for out in self._worker_vllm(job):
                yield out
            return
        staged = isinstance(job, ShardRef)
        async for event in self.service.events(job):
            if staged and isinstance(event, ChunkEvent):
                # a staged job's results are read from the store: RunPod's aggregate (every yield,
                # kept in this worker until the request ends) holds progress only, never results
                event = event.model_copy(update={"results": []})
            yield event.model_dump(mode="json")
            if isinstance(event, FinalEvent) and event.outcome is Outcome.failed:
                yield {"error": f"job {job.job_id} failed: {event.summary.reason or 'failed'}"}

    async def _keep_request_id(self, job_id: str, request_id: Any, *, training: bool = False) -> None:
        """Our job id -> RunPod's request id, in the store, so `/cancel` reaches this run from any API
        replica, even one whose own `/run` lost its answer (shared/server/dispatch.py); a training job's as
        `train:<id>`, so it reaches the training endpoint."""
        if not isinstance(request_id, str) or not request_id or request_id == job_id:
            return
        try:
            await self.service.store.set_dispatch_ref(job_id, f"{TRAIN_REF}{request_id}" if training else request_id)
        except Exception as e:  # best effort: the job runs and stores its results all the same
            log.warning("runpod job=%s could not keep its request id: %s", request_id, type(e).__name__)

    async def _worker_vllm(self, job) -> AsyncIterator[dict[str, Any]]:
        result: Result | None = None
        final: FinalEvent | None = None
        async for event in self.service.events(job):
            if isinstance(event, ChunkEvent) and event.results:
                result = event.results[0]
            elif isinstance(event, FinalEvent):
                final = event
        if result is None and final is not None and final.outcome is Outcome.completed:
            stored = await self.service.store.results(job.id, limit=1)  # a retried request: done before
            result = stored[0] if stored else None
        if result is None or result.error is not None:
            reason = result.error.message if result and result.error else (final and final.summary.reason)
            yield {"error": reason or "the request failed"}
            return
        usage = result.usage
        yield {"choices": [{"tokens": [result.text or ""]}],
               "usage": {"input": usage.prompt_tokens if usage else 0,
                         "output": usage.completion_tokens if usage else 0}}
