"""The store protocol, the row shape every backend writes, and the retry policy.

Every backend keeps the same two tables (supabase/migrations/*_init.sql) with the same
semantics: `write` is one round trip per chunk and idempotent on (job_id, custom_id), always
with the full column set, its rows in custom_id order (`in_write_order`: no deadlocks between two
writers of one job); the jobs row's counters are kept by the database itself, so a chunk written
twice is counted once.

A job's items live in the store too (job_items, supabase/migrations/*_job_items.sql): `stage_items`
writes them in batches, idempotent on (job_id, idx), and `read_items` reads an idx range (a shard)
page by page. `jobs.staged` counts them, kept by the database like the result counters. A row is an
`Item`, or a `Rejection` (an item refused at the edge, kept so that it becomes an error result):
`row_doc` and `doc_row` are the one encoding every store uses.

Uploaded files (OpenAI's Files API; shared/contracts/files.py, supabase/migrations/*_files.sql) keep
their lines the same way in file_items; `copy_file_items` copies them into a job's items inside the
database. The jobs row also counts the tokens of its stored results (`prompt_tokens`,
`completion_tokens`), kept like the result counters.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from shared.contracts.errors import StoreError, StoreUnavailable
from shared.contracts.events import Outcome
from shared.contracts.files import FileRecord
from shared.contracts.models import (
    Item,
    ItemError,
    Job,
    JobRecord,
    JobStatus,
    LatencyFigures,
    Rejection,
    Result,
    ResultStatus,
    Summary,
    Usage,
)
from shared.contracts.owners import KeyRecord

T = TypeVar("T")

#: a staged row: an item, or one refused at the edge (it becomes an error result)
Row = Item | Rejection

#: the job statuses `finish(if_open=True)` writes over: the job has not ended
OPEN_STATUSES = (JobStatus.queued.value, JobStatus.running.value)

log = logging.getLogger("llm_jobs.store")

#: the columns of job_results a write sends, every time (PostgREST nulls a missing key on merge)
RESULT_COLUMNS = ("job_id", "custom_id", "status", "text", "parsed", "error", "finish_reason",
                  "prompt_tokens", "completion_tokens", "latency_ms")


class Store(Protocol):
    async def accept(self, job: Job, *, total: int | None = None) -> bool:
        """Record a submitted job as queued; False (and nothing changes) if the id is known already.
        `total` overrides `job.total` (a job whose items are staged, not carried)."""

    async def begin(self, job: Job, *, total: int | None = None) -> None:
        """Record the job as running (creating its row if needed), keeping its counters. `total`
        overrides `job.total`: a shard's worker passes an item-less Job of the job's options and the
        job's real total."""

    async def done_ids(self, job_id: str, custom_ids: Sequence[str] | None = None) -> dict[str, ResultStatus]:
        """custom_id -> status of the stored results: what a re-run skips. With `custom_ids`, only
        those among them (a worker asks a page at a time, so memory never grows with the job); the
        store splits them into requests its backend takes."""

    async def write(self, job_id: str, results: Sequence[Result]) -> None:
        """Store one chunk: one round trip, idempotent on (job_id, custom_id)."""

    async def finish(self, job_id: str, status: JobStatus, summary: Summary, *, if_open: bool = False) -> bool:
        """Record the outcome. Callers shield it from cancellation. True when the row was written:
        without `if_open`, when the job exists; with it, only when the stored job is still queued or
        running (one conditional UPDATE: of two callers racing, exactly one gets True)."""

    async def set_dispatch_ref(self, job_id: str, ref: str | None) -> None:
        """Keep the platform's request id for the job's current run (RunPod's /run id), replacing
        any earlier one; None forgets it. A job the store does not know is left alone."""

    async def get_dispatch_ref(self, job_id: str) -> str | None:
        """The request id set_dispatch_ref kept (None: none, or no such job)."""

    async def get_job(self, job_id: str) -> JobRecord | None: ...

    async def list_jobs(self, *, limit: int = 50, status: JobStatus | None = None, owner: str | None = None,
                        after: str | None = None) -> list[JobRecord]:
        """The most recent jobs first (by created_at, then id), optionally only those in `status`, only
        `owner`'s (None: everyone's), and only those after the job `after` in that order (keyset
        pagination: the id of the last job of the previous page; an id unknown, or not `owner`'s, gives
        an empty page)."""

    async def count_jobs(self, *, owner: str | None = None) -> dict[str, int]:
        """How many jobs are in each state, `owner`'s only (None: everyone's): every `JobStatus` is a key,
        0 when it has none. One grouped count in the database, never the rows (`/metrics`' `llm_jobs_jobs`)."""

    async def finished_summaries(self, model: str | None, task: str | None = None, *, limit: int = 20
                                 ) -> list[Summary]:
        """The summaries of the most recently finished completed jobs of `model` and `task` (None: no task),
        newest first: what estimates are measured from."""

    async def results(self, job_id: str, *, after: str | None = None, limit: int = 1000) -> list[Result]:
        """Results ordered by custom_id, those after `after` (keyset pagination)."""

    async def latency_figures(self, job_id: str) -> LatencyFigures | None:
        """The job's item latency over its stored results that have one (`latency_ms`): the p50 and p95 by
        the nearest-rank method (shared/contracts/models.py `rank_index`, as a run's summary) and the
        largest; and the seconds from the job's `started_at` to its first stored result (`created_at`,
        never below 0). None when the job has no results (or no such job). Read in the database: a few
        small queries, never the results themselves."""

    async def stage_items(self, job_id: str, start_idx: int, items: Sequence[Item | Rejection]) -> int:
        """Store a batch of the job's rows (items, and rejections: `row_doc`) at idx start_idx,
        start_idx + 1, ...: idempotent on (job_id, idx), so a re-sent batch changes nothing. The job's
        row must exist (`accept`). Returns how many rows were new (0 for a batch sent again). A
        custom_id the job already has at another idx is a StoreError."""

    async def read_items(self, job_id: str, *, start_idx: int = 0, end_idx: int | None = None,
                         limit: int = 1000) -> list[Item | Rejection]:
        """Up to `limit` rows with start_idx <= idx < end_idx (None: no end), in idx order: a shard,
        page by page. Batches staged back to back leave no gaps, so the next page starts at
        start_idx + len(page)."""

    async def count_items(self, job_id: str) -> int:
        """Items staged for the job so far (0: none, or no such job)."""

    async def create_file(self, rec: FileRecord) -> None:
        """Record an uploaded file (its lines come with `stage_file_lines`). Idempotent: a file id
        known already changes nothing (a retried request)."""

    async def finish_file(self, file_id: str, *, bytes: int, lines: int, rejected: int, status: str,
                          status_details: str | None = None) -> None:
        """Set the file's size, line counts and status once its upload ended. An unknown id is left
        alone."""

    async def get_file(self, file_id: str) -> FileRecord | None:
        """The file's record (None: no such file)."""

    async def stage_file_lines(self, file_id: str, start_idx: int, rows: Sequence[Item | Rejection]) -> int:
        """As `stage_items`, for a file's lines: idempotent on (file_id, idx), the rows it added.
        The file must exist (`create_file`)."""

    async def read_file_lines(self, file_id: str, *, start_idx: int = 0, end_idx: int | None = None,
                              limit: int = 1000) -> list[Item | Rejection]:
        """As `read_items`, for a file's lines."""

    async def copy_file_items(self, file_id: str, job_id: str) -> int:
        """Copy the file's lines into the job's items at the same idx (the job must exist:
        `accept`); `jobs.staged` counts them. Idempotent: a second copy adds nothing. Returns the
        rows added."""

    async def create_key(self, rec: KeyRecord) -> None:
        """Keep an owner's API key (its digest; the key itself is never stored). A repeated id or digest
        is a StoreError."""

    async def find_key(self, digest: str) -> KeyRecord | None:
        """The key with this SHA-256 digest, revoked or not (None: no such key)."""

    async def list_keys(self, *, owner: str | None = None) -> list[KeyRecord]:
        """Every key (or `owner`'s), oldest first, revoked ones too."""

    async def revoke_key(self, key_id: str) -> bool:
        """Mark the key revoked (a second revoke keeps the first time). False: no such key."""

    async def close(self) -> None: ...


def item_doc(item: Item) -> dict[str, Any]:
    """An item as job_items keeps it: the wire's JSON document (what `Job.wire()` writes for it)."""
    return item.model_dump(mode="json", by_alias=True, exclude_none=True)


def item_json(item: Item) -> str:
    """`item_doc` as JSON text, in one step."""
    return item.model_dump_json(by_alias=True, exclude_none=True)


def row_doc(row: Item | Rejection) -> dict[str, Any]:
    """A staged row as job_items and file_items keep it: an item's wire document (`item_doc`), or
    `{"rejected": <the rejection>}` for a rejection (no item has a `rejected` field)."""
    if isinstance(row, Rejection):
        return {"rejected": row.model_dump(mode="json")}
    return item_doc(row)


def row_json(row: Item | Rejection) -> str:
    """`row_doc` as JSON text, in one step."""
    if isinstance(row, Rejection):
        return f'{{"rejected":{row.model_dump_json()}}}'
    return item_json(row)


def doc_row(doc: Any) -> Item | Rejection:
    """A row back from its document (`row_doc`), as a dict or as JSON text."""
    if isinstance(doc, str | bytes):
        doc = json.loads(doc)
    if len(doc) == 1 and "rejected" in doc:
        return Rejection.model_validate(doc["rejected"])
    return Item.model_validate(doc)


def doc_rows(docs: Sequence[Any]) -> list[Item | Rejection]:
    return [doc_row(d) for d in docs]


#: how many rows a batch has before its CPU work (encoding, decoding) leaves the event loop
OFF_LOOP_ROWS = 64


async def off_loop(fn: Callable[..., T], *args: Any, rows: int) -> T:
    """`fn(*args)` in a worker thread when it handles `rows` >= OFF_LOOP_ROWS rows (thousands of items
    to encode or decode would stall the loop: heartbeats, other requests), else right here."""
    if rows >= OFF_LOOP_ROWS:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


def id_batches(ids: Sequence[str], *, most: int, url_bytes: int | None = None) -> Iterator[list[str]]:
    """`ids` without repeats, in runs of at most `most`; with `url_bytes`, also runs whose PostgREST
    `in.(...)` list (each id quoted, then percent-encoded in the URL) stays within that many bytes
    (an id longer than that goes alone)."""
    batch: list[str] = []
    size = 0
    for cid in dict.fromkeys(ids):
        n = len(quote('"' + cid.replace("\\", "\\\\").replace('"', '\\"') + '"', safe="")) + 3  # and its comma
        if batch and (len(batch) >= most or (url_bytes is not None and size + n > url_bytes)):
            yield batch
            batch, size = [], 0
        batch.append(cid)
        size += n
    if batch:
        yield batch


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
    for k in ("prompt_tokens", "completion_tokens"):
        if row.get(k) is None:
            row.pop(k, None)
    return JobRecord.model_validate(row)


def seconds_between(start: Any, end: Any) -> float | None:
    """Seconds from `start` to `end` (datetimes, or ISO 8601 text as SQLite and PostgREST give them), never
    below 0 (a clock that stepped back, or a start written by another machine's clock); None if either is."""
    if start is None or end is None:
        return None
    start, end = (datetime.fromisoformat(v) if isinstance(v, str) else v for v in (start, end))
    return round(max((end - start).total_seconds(), 0.0), 3)


def status_counts(rows: Iterable[tuple[str, int]]) -> dict[str, int]:
    """`count_jobs`' answer from (status, count) pairs: every `JobStatus` a key, 0 when the database had none."""
    counts = {s.value: 0 for s in JobStatus}
    for status, n in rows:
        counts[str(status)] = int(n)
    return counts


#: the columns of files a store writes (FileRecord's fields; created_at is the database's)
FILE_COLUMNS = ("id", "purpose", "filename", "bytes", "lines", "rejected", "status", "status_details", "owner")


def file_row(rec: FileRecord) -> dict[str, Any]:
    return {c: getattr(rec, c) for c in FILE_COLUMNS}


def row_file(row: dict[str, Any]) -> FileRecord:
    return FileRecord.model_validate({k: v for k, v in dict(row).items() if k in FileRecord.model_fields})


#: the columns of api_keys a store writes (created_at is the database's; revoked_at: `revoke_key`)
KEY_COLUMNS = ("id", "owner", "digest", "hint", "label")


def key_row(rec: KeyRecord) -> dict[str, Any]:
    return {c: getattr(rec, c) for c in KEY_COLUMNS}


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


async def record_outcome(store: Store, job_id: str, outcome: Outcome, summary: Summary, *, retry_s: float,
                         if_open: bool = False) -> bool:
    """The one way a job's outcome is written (the runner at the end of a run, the lifecycle for a
    job cancelled before it ran, a dispatcher for a job that crashed before its run began, the
    roll-up of a job of several shards).

    Shielded from cancellation, so a cancelled job still records that it was cancelled, and
    retried with backoff. True only when the row was written: False (logged) when the store would
    not take it, False when `if_open` and the job had ended already (`Store.finish`).
    """
    if if_open:
        def call() -> Awaitable[bool]:
            return store.finish(job_id, outcome.status, summary, if_open=True)
    else:
        def call() -> Awaitable[bool]:
            return store.finish(job_id, outcome.status, summary)
    try:
        written = await asyncio.shield(retrying(call, within_s=retry_s))
    except StoreError:
        log.exception("job %s: could not record its outcome (%s)", job_id, outcome)
        return False
    return written is not False  # (a store written before finish answered says nothing: None)
