"""A job of several shards ends when all of them have: the roll-up (docs/architecture.md, "Shards").

A shard's run records nothing about its job (`run_job` with a ShardRef of several shards). Its
caller hands the shard's final event to `conclude`, which decides what the job's is:

- `completed`: the job completes when every one of its items has a result. The store's counters
  (kept by the database, each result counted once) say so; whichever shard sees it first records
  the job completed. Two shards finishing at once both may see it: the record is conditional
  (`finish(if_open=True)`), so exactly one of them records it and publishes the job's final event.
- `cancelled` and `failed`: the job ends so, recorded once the same way (a failed shard is one the
  queue's retries gave up on, or one a platform ran without retries).
- `stopped`: nothing is recorded; the shard runs again and resumes.

The job's summary is rolled up from the store: counters, tokens and the time since it started, and its
item latency over every stored result (`Store.latency_figures`: the same nearest-rank percentiles as a
run's) with the time from its start to its first stored result. Its `peak_kv_cache` is None: each shard
ran on its own engine (or at another time on one), and no store keeps their readings.
A job of one shard (or a whole inline job) was recorded by its runner: its final event is the job's.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from shared.contracts.errors import StoreError
from shared.contracts.events import FinalEvent, Outcome
from shared.contracts.models import Job, JobRecord, LatencyFigures, Summary
from shared.contracts.shards import ShardRef
from shared.stores.base import Store, record_outcome, retrying

log = logging.getLogger("llm_jobs.rollup")


def rolled_up(record: JobRecord, reason: str | None = None, figures: LatencyFigures | None = None) -> Summary:
    """The job's summary from what the store counts for it, with its latency `figures` where the store
    gave them (`Store.latency_figures`)."""
    started = record.started_at or record.created_at
    elapsed = max((datetime.now(UTC) - started).total_seconds(), 1e-9) if started else 0.0
    done = record.completed + record.failed
    tokens = record.completion_tokens
    f = figures or LatencyFigures()
    return Summary(total=record.total, completed=record.completed, failed=record.failed, elapsed_s=round(elapsed, 3),
                   items_per_s=round(done / elapsed, 3) if elapsed else 0.0, prompt_tokens=record.prompt_tokens,
                   completion_tokens=tokens, tokens_per_s=round(tokens / elapsed, 1) if elapsed else 0.0,
                   reason=reason, latency_p50_ms=f.p50_ms, latency_p95_ms=f.p95_ms, latency_max_ms=f.max_ms,
                   first_chunk_s=f.first_result_s)


async def _figures(store: Store, job_id: str, retry_s: float) -> LatencyFigures | None:
    """The job's latency figures; None when the store cannot say (the outcome is recorded without them)."""
    try:
        return await retrying(lambda: store.latency_figures(job_id), within_s=retry_s)
    except StoreError:
        log.warning("job %s: could not read its latency figures; its summary goes without them", job_id,
                    exc_info=True)
        return None


async def end_job(store: Store, job_id: str, outcome: Outcome, reason: str | None, *, retry_s: float
                  ) -> FinalEvent | None:
    """Record the job's outcome unless it has ended already; its final event when this call recorded it."""
    try:
        record = await retrying(lambda: store.get_job(job_id), within_s=retry_s)
    except StoreError:
        log.exception("job %s: could not read it to record its outcome (%s)", job_id, outcome)
        return None
    if record is None or record.status.terminal:
        return None
    summary = rolled_up(record, reason, await _figures(store, job_id, retry_s))
    if not await record_outcome(store, job_id, outcome, summary, retry_s=retry_s, if_open=True):
        return None
    return FinalEvent(job_id=job_id, outcome=outcome, summary=summary)


async def conclude(store: Store, work: ShardRef | Job, final: FinalEvent, *, retry_s: float) -> FinalEvent | None:
    """The job's final event after this run, when this run ended the job; None when the job goes on
    (or another shard ended it). See the module docstring."""
    if not work.sharded:
        return final
    match final.outcome:
        case Outcome.stopped:
            return None
        case Outcome.completed:
            try:
                record = await retrying(lambda: store.get_job(work.job_id), within_s=retry_s)
            except StoreError:
                log.exception("job %s: could not read its counters after %s", work.job_id, work.label())
                return None
            if record is None or record.completed + record.failed < record.total:
                return None  # other shards still run
            return await end_job(store, work.job_id, Outcome.completed, None, retry_s=retry_s)
        case outcome:
            return await end_job(store, work.job_id, outcome, final.summary.reason, retry_s=retry_s)
