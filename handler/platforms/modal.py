"""What modal_app.py's class and Cron do, kept here so the app file stays wiring only.

Nothing here imports modal: it is plain async code over a JobService, so it runs (and is
tested) anywhere. Inputs are shard references of staged jobs (what the API spawns, one call per
shard: shared/contracts/shards.py) or whole Job documents; outputs are events as JSON
(shared/contracts/events.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from handler.service import JobService
from shared.contracts.errors import InputError, JobFailed
from shared.contracts.events import ErrorEvent, FinalEvent, Outcome, parse_event
from shared.contracts.settings import Settings
from shared.queue.upstash import JobQueue

log = logging.getLogger("llm_jobs.modal")


async def stream_events(service: JobService, payload: Any, *, default_id: str | None = None
                        ) -> AsyncIterator[dict[str, Any]]:
    """Chunk events as they are stored, then the final event. Invalid input gives an `error`
    event and a `failed` final event, and runs nothing."""
    try:
        job = service.parse(payload, default_id=default_id)
    except InputError as e:
        job_id = payload.get("id") if isinstance(payload, dict) and isinstance(payload.get("id"), str) else None
        reason = f"invalid input: {e}"
        await service.refuse(job_id, reason)
        yield ErrorEvent(job_id=job_id, error=reason).model_dump(mode="json")
        yield FinalEvent.failed(job_id or default_id or "", reason).model_dump(mode="json")
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


async def drain_queue(service: JobService) -> dict[str, Any]:
    """Run the Upstash queue dry on this engine (the Cron's GPU half)."""
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
    return {"done": stats.done, "failed": stats.failed, "cancelled": stats.cancelled,
            "dead_lettered": stats.dead_lettered, "released": stats.released}


async def queued_jobs(settings: Settings) -> int:
    """Jobs waiting in the queue, including those waiting out a retry backoff (the Cron's CPU half)."""
    queue = JobQueue.from_settings(settings)
    try:
        return await queue.waiting()
    finally:
        await queue.close()
