"""What modal_app.py's class, web app and Cron do, kept here so the app file stays wiring only.

Nothing here imports modal: it is plain async code over a JobService, so it runs (and is
tested) anywhere. (FastAPI is imported at the top: it resolves the routes' annotations from
this module's globals.)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Body, FastAPI, HTTPException
from fastapi.responses import JSONResponse

from handler.service import JobService
from shared.errors import InputError, JobFailed
from shared.inputs import parse_job_document
from shared.models import JobStatus, new_job_id
from shared.prepare import Limits
from shared.queue import JobQueue
from shared.settings import Settings, get_settings

log = logging.getLogger("llm_jobs.modal")


def _invalid(payload: Any, e: InputError) -> dict[str, Any]:
    job_id = payload.get("id") if isinstance(payload, dict) else None
    return {"type": "error", "job_id": job_id, "error": f"invalid input: {e}"}


async def stream_events(service: JobService, payload: Any, *, default_id: str | None = None
                        ) -> AsyncIterator[dict[str, Any]]:
    """Chunk events as they are stored, then the final event; invalid input gives one `error` event."""
    try:
        job = service.parse(payload, default_id=default_id)
    except InputError as e:
        yield _invalid(payload, e)
        return
    async for event in service.events(job):
        yield event.model_dump(mode="json")


async def run_to_end(service: JobService, payload: Any, *, default_id: str | None = None) -> dict[str, Any]:
    """The final event of the whole job. Raises JobFailed when a retry could help."""
    final: dict[str, Any] | None = None
    async for event in stream_events(service, payload, default_id=default_id):
        if event["type"] != "chunk":
            final = event
    assert final is not None
    if final["type"] == "final" and final["status"] == JobStatus.failed:
        # raised so Modal retries the call (engine death, store outage); the retry resumes
        raise JobFailed(f"job {final['job_id']} failed: {final['summary'].get('reason') or 'failed'}")
    return final


async def drain_queue(service: JobService) -> dict[str, Any]:
    """Run the Upstash queue dry on this engine (the Cron's GPU half)."""
    from handler.worker import Worker

    s = service.settings
    queue = JobQueue.from_settings(s)
    try:
        worker = Worker(service.engine, queue, service.store, concurrency=s.jobs_per_worker, lease_s=s.lease_s,
                        drain=True, limits=service.limits, store_retry_s=s.store_retry_s)
        stats = await worker.run()
    finally:
        await queue.close()
    return {"done": stats.done, "failed": stats.failed, "cancelled": stats.cancelled,
            "dead_lettered": stats.dead_lettered, "released": stats.released}


async def queued_jobs(settings: Settings) -> int:
    """Jobs waiting in the queue, including those waiting out a retry backoff (the Cron's CPU half)."""
    queue = JobQueue.from_settings(settings)
    try:
        stats = await queue.stats()
    finally:
        await queue.close()
    return sum(v for k, v in stats.items() if k.startswith("queued_")) + stats["retrying"]


def create_web_app(submit: Callable[[dict[str, Any]], Awaitable[str]],
                   poll: Callable[[str], Awaitable[dict[str, Any] | None]]):
    """POST /jobs spawns a run and answers its call id; GET /jobs/{call_id} answers 202 while it runs,
    then the final event (or `{"type": "error", ...}` when the call failed for good)."""
    app = FastAPI(title="llm-jobs on Modal (interim)",
                  description="Submit a job (spawns LLMJobs.run) and poll its FunctionCall.")
    limits = Limits.from_settings(get_settings())

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/jobs", status_code=202)
    async def create(job: Annotated[Any, Body()]) -> dict[str, Any]:
        if isinstance(job, dict) and not job.get("id"):
            job = {**job, "id": new_job_id()}  # named before spawning, so a retried call resumes it
        try:
            # structure and items are checked here; the model name is checked by the engine
            parsed = parse_job_document(job, limits=limits, any_model=True)
        except InputError as e:
            raise HTTPException(422, detail=[issue.as_dict() for issue in e.issues]) from e
        call_id = await submit(job)
        return {"id": parsed.id, "call_id": call_id, "status": "queued", "total": parsed.total,
                "status_url": f"/jobs/{call_id}"}

    @app.get("/jobs/{call_id}")
    async def status(call_id: str):
        final = await poll(call_id)
        if final is None:
            return JSONResponse({"call_id": call_id, "status": "running"}, status_code=202)
        return {"call_id": call_id, **final}

    return app

