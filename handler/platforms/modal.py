"""What modal_app.py's class, web app and Cron do, kept here so the app file stays wiring only.

Nothing here imports modal: it is plain async code over a JobService, so it runs (and is
tested) anywhere.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from handler.service import JobService
from shared.errors import ConfigError, InputError, JobFailed
from shared.models import JobStatus
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


def api_app(dispatcher: Any):
    """The HTTP API for Modal's web function. It refuses to run open: API_KEYS must be set."""
    from shared.api import create_app

    settings = get_settings()
    if not settings.api_keys:
        raise ConfigError("set API_KEYS (in the llm-jobs-config secret): the API on Modal is public")
    return create_app(settings.model_copy(update={"dispatcher": "modal"}), dispatcher=dispatcher)
