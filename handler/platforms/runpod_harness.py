"""RunPod's serverless HTTP contract on loopback, running a real handler: `llm-jobs serve-runpod`.

    POST /run              {"input": ...}  -> {"id", "status": "IN_QUEUE"}
    POST /runsync          waits up to ?wait= ms (default 90 s) -> the /status answer
    GET  /stream/{id}      the outputs produced since the last poll: {"id", "status", "stream": [{"output"}]}
    GET  /status/{id}      {"id", "status", "delayTime", "executionTime", "output" | "error"}
    POST /cancel/{id}      stops the job (its task is cancelled, as RunPod's worker does)
    GET  /health           {"jobs": {...}, "workers": {...}}
    GET  /metrics          Prometheus metrics of this process: the runner's and vLLM's `vllm:*` (not RunPod's:
                           a serverless worker cannot be scraped; the API derives job and queue figures)

Every route also answers under `/v2/{endpoint_id}/...`, so a client built for
`https://api.runpod.ai/v2/<endpoint>` works with only its base URL changed.

Unlike the SDK's `--rp_serve_api`, which runs a job to its end before answering `/stream`, the
handler's outputs are visible on `/stream` as they are yielded, `/cancel` really stops the job,
and jobs run concurrently up to the handler's `concurrency_modifier`. Outputs go through the
runpod SDK's own `run_job_generator`, with its rule that a yielded `{"error": ...}` fails the job.
No auth: it binds to loopback for development.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, HTTPException, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from shared.queue.runpod import FINAL_STATES

Handler = Callable[[dict[str, Any]], AsyncIterator[Any]]
FINAL = FINAL_STATES
#: how long GET /stream holds an empty answer waiting for new output (a gentle long poll)
STREAM_WAIT_S = 2.0
#: finished jobs kept for /status and /stream before the oldest are forgotten
KEEP_FINISHED = 1000


@dataclass
class _Job:
    id: str
    input: Any
    status: str = "IN_QUEUE"
    pending: list[dict[str, Any]] = field(default_factory=list)  # outputs not yet read from /stream
    outputs: list[Any] = field(default_factory=list)  # every output, for /status (aggregate stream)
    error: str | None = None
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    task: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def status_body(self, *, aggregate: bool) -> dict[str, Any]:
        now = time.monotonic()
        body: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "delayTime": round(((self.started or now) - self.created) * 1000),
            "executionTime": round(((self.finished or now) - self.started) * 1000) if self.started else 0,
        }
        if self.status == "COMPLETED" and aggregate:
            body["output"] = self.outputs
        if self.error is not None:
            body["error"] = self.error
        return body


class RunpodHarness:
    def __init__(self, handler: Handler, *, concurrency_modifier: Callable[[int], int] | None = None,
                 aggregate: bool = True):
        self.handler = handler
        self.aggregate = aggregate
        limit = concurrency_modifier(1) if concurrency_modifier else 1
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"concurrency_modifier must return an int >= 1, not {limit!r}")
        self.concurrency = limit
        self._slots = asyncio.Semaphore(limit)
        self.jobs: OrderedDict[str, _Job] = OrderedDict()

    # ## Jobs

    def submit(self, job_input: Any) -> _Job:
        job = _Job(id=f"local-{uuid.uuid4()}", input=job_input)
        self.jobs[job.id] = job
        job.task = asyncio.create_task(self._run(job), name=job.id)
        self._forget_old()
        return job

    def get(self, job_id: str) -> _Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r} (ids live as long as this process)")
        return job

    async def cancel(self, job: _Job) -> None:
        if job.status in FINAL or job.task is None:
            return
        job.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job.task

    async def _run(self, job: _Job) -> None:
        from runpod.serverless.modules.rp_job import run_job_generator

        try:
            async with self._slots:
                job.status, job.started = "IN_PROGRESS", time.monotonic()
                job.notify()
                gen = run_job_generator(self.handler, {"id": job.id, "input": job.input})
                async with contextlib.aclosing(gen):
                    async for out in gen:
                        if isinstance(out.get("output"), dict) and out["output"].get("error"):
                            out = {"error": str(out["output"]["error"])}  # the SDK's own rule
                        if out.get("error"):
                            job.error, job.status = str(out["error"]), "FAILED"
                            break
                        job.pending.append({"output": out["output"]})
                        if self.aggregate:
                            job.outputs.append(out["output"])
                        job.notify()
                if job.status == "IN_PROGRESS":
                    job.status = "COMPLETED"
        except asyncio.CancelledError:
            job.status = "CANCELLED"
            raise
        finally:
            job.finished = time.monotonic()
            job.notify()

    async def wait(self, job: _Job, timeout_s: float) -> None:
        if job.task is not None and job.status not in FINAL:
            await asyncio.wait({job.task}, timeout=timeout_s)

    async def stream(self, job: _Job, wait_s: float = STREAM_WAIT_S) -> dict[str, Any]:
        if not job.pending and job.status not in FINAL:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.changed.wait(), wait_s)
        out, job.pending = job.pending, []
        return {"id": job.id, "status": job.status, "stream": out}

    def health(self) -> dict[str, Any]:
        counts = {s: sum(j.status == s for j in self.jobs.values())
                  for s in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED")}
        return {"jobs": {"inQueue": counts["IN_QUEUE"], "inProgress": counts["IN_PROGRESS"],
                         "completed": counts["COMPLETED"], "failed": counts["FAILED"],
                         "cancelled": counts["CANCELLED"], "retried": 0},
                "workers": {"running": min(counts["IN_PROGRESS"], self.concurrency),
                            "idle": max(self.concurrency - counts["IN_PROGRESS"], 0)},
                "concurrency": self.concurrency}

    def _forget_old(self) -> None:
        finished = [k for k, j in self.jobs.items() if j.status in FINAL]
        for k in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self.jobs[k]


def _input_of(body: Any) -> Any:
    if not isinstance(body, dict) or "input" not in body:
        raise HTTPException(400, 'the body must be a JSON object with an "input" field')
    return body["input"]


def create_harness_app(handler: Handler, *, concurrency_modifier: Callable[[int], int] | None = None,
                       aggregate: bool = True) -> FastAPI:
    app = FastAPI(title="llm-jobs local RunPod harness",
                  description="RunPod's serverless HTTP contract, on loopback, running the real handler.")
    holder: dict[str, RunpodHarness] = {}

    def harness() -> RunpodHarness:  # created in the server's event loop, on first use
        if "h" not in holder:
            holder["h"] = RunpodHarness(handler, concurrency_modifier=concurrency_modifier, aggregate=aggregate)
        return holder["h"]

    router = APIRouter()

    @router.post("/run")
    async def run(body: Annotated[Any, Body()]) -> dict[str, Any]:
        job = harness().submit(_input_of(body))
        return {"id": job.id, "status": job.status}

    @router.post("/runsync")
    async def runsync(body: Annotated[Any, Body()],
                      wait: Annotated[int, Query(ge=1000, le=300_000)] = 90_000) -> dict[str, Any]:
        h = harness()
        job = h.submit(_input_of(body))
        await h.wait(job, wait / 1000)
        return job.status_body(aggregate=h.aggregate)

    @router.get("/status/{job_id}")
    async def status(job_id: str) -> dict[str, Any]:
        h = harness()
        return h.get(job_id).status_body(aggregate=h.aggregate)

    @router.get("/stream/{job_id}")
    async def stream(job_id: str) -> dict[str, Any]:
        h = harness()
        return await h.stream(h.get(job_id))

    @router.post("/cancel/{job_id}")
    async def cancel(job_id: str) -> dict[str, Any]:
        h = harness()
        job = h.get(job_id)
        await h.cancel(job)
        return {"id": job.id, "status": job.status}

    @router.get("/health")
    async def health() -> dict[str, Any]:
        return harness().health()

    app.include_router(router)
    app.include_router(router, prefix="/v2/{endpoint_id}")

    @app.get("/metrics")  # not RunPod's (its workers cannot be scraped): this process's, for development
    async def metrics() -> Response:
        return Response(await asyncio.to_thread(generate_latest, REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app
