"""The store protocol, the row shape every backend writes, and the retry policy.

Every backend keeps the same two tables (supabase/migrations/*_init.sql) with the same
semantics: `write` is one round trip per chunk and idempotent on (job_id, custom_id), always
with the full column set, its rows in custom_id order (`in_write_order`: no deadlocks between two
writers of one job); the jobs row's counters are kept by the database itself, so a chunk written
twice is counted once.

A job's items live in the store too (job_items, supabase/migrations/*_job_items.sql): `stage_items`
writes them in batches, idempotent on (job_id, idx), and `read_items` reads an idx range (a shard)
page by page. `jobs.staged` counts them, kept by the database like the result counters.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from shared.contracts.errors import StoreError, StoreUnavailable
from shared.contracts.events import Outcome
from shared.contracts.models import Item, ItemError, Job, JobRecord, JobStatus, Result, ResultStatus, Summary, Usage

T = TypeVar("T")

log = logging.getLogger("llm_jobs.store")

#: the columns of job_results a write sends, every time (PostgREST nulls a missing key on merge)
RESULT_COLUMNS = ("job_id", "custom_id", "status", "text", "parsed", "error", "finish_reason",
                  "prompt_tokens", "completion_tokens", "latency_ms")


class Store(Protocol):
    async def accept(self, job: Job) -> bool:
        """Record a submitted job as queued; False (and nothing changes) if the id is known already."""

    async def begin(self, job: Job) -> None:
        """Record the job as running (creating its row if needed)."""

    async def done_ids(self, job_id: str) -> dict[str, ResultStatus]:
        """custom_id -> status of every stored result: what a re-run skips."""

    async def write(self, job_id: str, results: Sequence[Result]) -> None:
        """Store one chunk: one round trip, idempotent on (job_id, custom_id)."""

    async def finish(self, job_id: str, status: JobStatus, summary: Summary) -> None:
        """Record the outcome. Callers shield it from cancellation."""

    async def set_dispatch_ref(self, job_id: str, ref: str | None) -> None:
        """Keep the platform's request id for the job's current run (RunPod's /run id), replacing
        any earlier one; None forgets it. A job the store does not know is left alone."""

    async def get_dispatch_ref(self, job_id: str) -> str | None:
        """The request id set_dispatch_ref kept (None: none, or no such job)."""

    async def get_job(self, job_id: str) -> JobRecord | None: ...

    async def list_jobs(self, *, limit: int = 50, status: JobStatus | None = None) -> list[JobRecord]:
        """The most recent jobs first (by created_at, then id), optionally only those in `status`."""

    async def results(self, job_id: str, *, after: str | None = None, limit: int = 1000) -> list[Result]:
        """Results ordered by custom_id, those after `after` (keyset pagination)."""

    async def stage_items(self, job_id: str, start_idx: int, items: Sequence[Item]) -> int:
        """Store a batch of the job's items at idx start_idx, start_idx + 1, ...: idempotent on
        (job_id, idx), so a re-sent batch changes nothing. The job's row must exist (`accept`).
        Returns how many rows were new (0 for a batch sent again). A custom_id the job already has
        at another idx is a StoreError."""

    async def read_items(self, job_id: str, *, start_idx: int = 0, end_idx: int | None = None,
                         limit: int = 1000) -> list[Item]:
        """Up to `limit` items with start_idx <= idx < end_idx (None: no end), in idx order: a shard,
        page by page. Batches staged back to back leave no gaps, so the next page starts at
        start_idx + len(page)."""

    async def count_items(self, job_id: str) -> int:
        """Items staged for the job so far (0: none, or no such job)."""

    async def close(self) -> None: ...


def item_doc(item: Item) -> dict[str, Any]:
    """An item as job_items keeps it: the wire's JSON document (what `Job.wire()` writes for it)."""
    return item.model_dump(mode="json", by_alias=True, exclude_none=True)


def item_json(item: Item) -> str:
    """`item_doc` as JSON text, in one step."""
    return item.model_dump_json(by_alias=True, exclude_none=True)


def check_start(start_idx: int) -> None:
    if start_idx < 0:
        raise ValueError(f"start_idx must be >= 0, not {start_idx}")


def in_write_order(results: Sequence[Result]) -> list[Result]:
    """A chunk's rows in the one order every store writes them: by custom_id (code point order, the
    same as Postgres' "C" collation). Two writers of the same job (a redelivery) then lock shared rows
    in the same order, so they wait for each other instead of deadlocking."""
    return sorted(results, key=lambda r: r.custom_id)


def result_row(job_id: str, r: Result) -> dict[str, Any]:
    usage = r.usage or Usage()
    return {
        "job_id": job_id,
        "custom_id": r.custom_id,
        "status": r.status.value,
        "text": r.text,
        "parsed": r.parsed,
        "error": r.error.model_dump() if r.error else None,
        "finish_reason": r.finish_reason,
        "prompt_tokens": usage.prompt_tokens if r.usage else None,
        "completion_tokens": usage.completion_tokens if r.usage else None,
        "latency_ms": r.latency_ms,
    }


def _json(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str | bytes) else v


def row_result(row: dict[str, Any]) -> Result:
    p, c = row.get("prompt_tokens"), row.get("completion_tokens")
    usage = None if p is None and c is None else Usage(prompt_tokens=p or 0, completion_tokens=c or 0,
                                                        total_tokens=(p or 0) + (c or 0))
    err = _json(row.get("error"))
    return Result(custom_id=row["custom_id"], status=ResultStatus(row["status"]), text=row.get("text"),
                  parsed=_json(row.get("parsed")), finish_reason=row.get("finish_reason"), usage=usage,
                  latency_ms=row.get("latency_ms"), error=ItemError(**err) if err else None)


def row_job(row: dict[str, Any]) -> JobRecord:
    row = dict(row)
    row["summary"] = _json(row.get("summary"))
    row["metadata"] = _json(row.get("metadata")) or {}
    return JobRecord.model_validate(row)


async def retrying(call: Callable[[], Awaitable[T]], *, within_s: float) -> T:
    """Run `call`, retrying StoreUnavailable with bounded exponential backoff for `within_s` seconds."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(StoreUnavailable),
        wait=wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.2),
        stop=stop_after_delay(within_s),
        reraise=True,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable")


async def record_outcome(store: Store, job_id: str, outcome: Outcome, summary: Summary, *, retry_s: float) -> bool:
    """The one way a job's outcome is written (the runner at the end of a run, the lifecycle for a
    job cancelled before it ran, a dispatcher for a job that crashed before its run began).

    Shielded from cancellation, so a cancelled job still records that it was cancelled, and
    retried with backoff. False (logged) when the store would not take it.
    """
    try:
        await asyncio.shield(retrying(lambda: store.finish(job_id, outcome.status, summary), within_s=retry_s))
    except StoreError:
        log.exception("job %s: could not record its outcome (%s)", job_id, outcome)
        return False
    return True
