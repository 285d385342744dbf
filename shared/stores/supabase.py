"""The production store: Supabase over PostgREST, with supabase-py's async client.

- Every result row carries the full column set: PostgREST nulls a key a row lacks on merge.
- One request per chunk: a merge-upsert on (job_id, custom_id), `return=minimal`, its rows in
  custom_id order (two writers of one job lock them in the same order: no deadlocks).
- supabase-py never retries POST or PATCH; the runner retries StoreUnavailable with bounded
  backoff, which is safe because merge-upserts and these PATCHes are idempotent.
- Every request has a timeout (the httpx client's). Errors map into our tree at the boundary.
- Items are staged as upserts that ignore duplicates on (job_id, idx), split so that no request's
  body passes `STAGE_BYTES`; PostgREST counts the rows each one added (`Prefer: count=exact`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
from postgrest.exceptions import APIError
from postgrest.types import CountMethod, ReturnMethod

from shared.contracts.errors import StoreError, StoreUnavailable
from shared.contracts.models import Item, Job, JobRecord, JobStatus, Result, ResultStatus, Summary
from shared.contracts.settings import DEFAULTS
from shared.stores.base import check_start, in_write_order, item_doc, result_row, row_job, row_result
from supabase import AsyncClient, AsyncClientOptions, acreate_client

#: PostgREST and Postgres error codes that mean "try again later"
_TRANSIENT_PREFIXES = ("PGRST000", "PGRST001", "PGRST002", "PGRST003", "08", "53", "57P", "57014", "40001",
                       "40P01", "5", "429")
_PAGE = 1000  # Supabase's default max rows per request
#: the most JSON one staging request carries (Supabase takes more; modest requests fail and retry cheaply)
STAGE_BYTES = 4 * 1024 * 1024


def _batches(rows: list[dict], budget: int) -> Iterator[list[dict]]:
    """`rows` in order, in runs whose JSON array (as postgrest-py encodes it) stays within `budget`
    bytes; a row larger than the budget goes alone."""
    batch: list[dict] = []
    size = 2  # []
    for row in rows:
        n = len(json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode()) + 1  # and its comma
        if batch and size + n > budget:
            yield batch
            batch, size = [], 2
        batch.append(row)
        size += n
    if batch:
        yield batch


def _now() -> str:
    return datetime.now(UTC).isoformat()


class SupabaseStore:
    def __init__(self, url: str, key: str, *, timeout_s: float = DEFAULTS.store_timeout_s,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.url = url
        self._key = key
        self.timeout_s = timeout_s
        self._transport = transport  # tests inject a PostgREST-faithful transport here
        self._client: AsyncClient | None = None

    async def _db(self) -> AsyncClient:
        if self._client is None:
            http = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), transport=self._transport)
            self._client = await acreate_client(self.url, self._key, options=AsyncClientOptions(
                httpx_client=http, postgrest_client_timeout=self.timeout_s, auto_refresh_token=False,
                persist_session=False))
        return self._client

    @asynccontextmanager
    async def _mapped(self, what: str) -> AsyncIterator[AsyncClient]:
        try:
            yield await self._db()
        except APIError as e:
            text = f"supabase {what}: {e.code} {e.message}"
            if any(str(e.code or "").startswith(p) for p in _TRANSIENT_PREFIXES):
                raise StoreUnavailable(text) from e
            raise StoreError(text) from e
        except (httpx.TransportError, httpx.TimeoutException) as e:
            raise StoreUnavailable(f"supabase {what}: {type(e).__name__}: {e}") from e

    async def accept(self, job: Job) -> bool:
        async with self._mapped("accept") as db:
            created = await db.table("jobs").upsert(
                {"id": job.id, "status": "queued", "model": job.model, "total": job.total, "metadata": job.metadata},
                on_conflict="id", ignore_duplicates=True, returning=ReturnMethod.representation).execute()
        return bool(created.data)

    async def begin(self, job: Job) -> None:
        async with self._mapped("begin") as db:
            await db.table("jobs").upsert(
                {"id": job.id, "status": "running", "model": job.model, "total": job.total,
                 "metadata": job.metadata, "started_at": _now()},
                on_conflict="id", ignore_duplicates=True, returning=ReturnMethod.minimal).execute()
            await db.table("jobs").update(
                {"status": "running", "total": job.total, "metadata": job.metadata, "finished_at": None,
                 "error": None}, returning=ReturnMethod.minimal).eq("id", job.id).execute()

    async def done_ids(self, job_id: str) -> dict[str, ResultStatus]:
        done: dict[str, ResultStatus] = {}
        after = ""
        async with self._mapped("done_ids") as db:
            while True:
                page = (await db.table("job_results").select("custom_id,status").eq("job_id", job_id)
                        .gt("custom_id", after).order("custom_id").limit(_PAGE).execute()).data
                done.update((r["custom_id"], ResultStatus(r["status"])) for r in page)
                if len(page) < _PAGE:
                    return done
                after = page[-1]["custom_id"]

    async def write(self, job_id: str, results: Sequence[Result]) -> None:
        rows = [result_row(job_id, r) for r in in_write_order(results)]  # PostgREST inserts in this order
        async with self._mapped("write") as db:
            await db.table("job_results").upsert(rows, on_conflict="job_id,custom_id",
                                                 returning=ReturnMethod.minimal).execute()

    async def finish(self, job_id: str, status: JobStatus, summary: Summary) -> None:
        async with self._mapped("finish") as db:
            await db.table("jobs").update(
                {"status": status.value, "finished_at": _now(), "summary": summary.model_dump(),
                 "error": summary.reason}, returning=ReturnMethod.minimal).eq("id", job_id).execute()

    async def set_dispatch_ref(self, job_id: str, ref: str | None) -> None:
        async with self._mapped("set_dispatch_ref") as db:
            await db.table("jobs").update({"dispatch_ref": ref}, returning=ReturnMethod.minimal) \
                .eq("id", job_id).execute()

    async def get_dispatch_ref(self, job_id: str) -> str | None:
        async with self._mapped("get_dispatch_ref") as db:
            rows = (await db.table("jobs").select("dispatch_ref").eq("id", job_id).limit(1).execute()).data
        return rows[0]["dispatch_ref"] if rows else None

    async def get_job(self, job_id: str) -> JobRecord | None:
        async with self._mapped("get_job") as db:
            rows = (await db.table("jobs").select("*").eq("id", job_id).limit(1).execute()).data
        return row_job(rows[0]) if rows else None

    async def list_jobs(self, *, limit: int = 50, status: JobStatus | None = None) -> list[JobRecord]:
        async with self._mapped("list_jobs") as db:
            query = db.table("jobs").select("*")
            if status is not None:
                query = query.eq("status", status.value)
            rows = (await query.order("created_at", desc=True).order("id", desc=True).limit(limit).execute()).data
        return [row_job(r) for r in rows]

    async def results(self, job_id: str, *, after: str | None = None, limit: int = 1000) -> list[Result]:
        async with self._mapped("results") as db:
            rows = (await db.table("job_results").select("*").eq("job_id", job_id).gt("custom_id", after or "")
                    .order("custom_id").limit(limit).execute()).data
        return [row_result(r) for r in rows]

    async def stage_items(self, job_id: str, start_idx: int, items: Sequence[Item]) -> int:
        check_start(start_idx)
        rows = [{"job_id": job_id, "idx": start_idx + k, "custom_id": it.custom_id, "item": item_doc(it)}
                for k, it in enumerate(items)]
        added = 0
        async with self._mapped("stage_items") as db:
            for batch in _batches(rows, STAGE_BYTES):
                done = await db.table("job_items").upsert(
                    batch, on_conflict="job_id,idx", ignore_duplicates=True, returning=ReturnMethod.minimal,
                    count=CountMethod.exact).execute()
                added += done.count or 0
        return added

    async def read_items(self, job_id: str, *, start_idx: int = 0, end_idx: int | None = None,
                         limit: int = 1000) -> list[Item]:
        items: list[Item] = []
        async with self._mapped("read_items") as db:
            while len(items) < limit:  # PostgREST answers at most _PAGE rows a request
                query = db.table("job_items").select("idx,item").eq("job_id", job_id).gte("idx", start_idx)
                if end_idx is not None:
                    query = query.lt("idx", end_idx)
                want = min(_PAGE, limit - len(items))
                page = (await query.order("idx").limit(want).execute()).data
                items.extend(Item.model_validate(r["item"]) for r in page)
                if len(page) < want:
                    break
                start_idx = page[-1]["idx"] + 1
        return items

    async def count_items(self, job_id: str) -> int:
        async with self._mapped("count_items") as db:
            rows = (await db.table("jobs").select("staged").eq("id", job_id).limit(1).execute()).data
        return rows[0]["staged"] if rows else 0

    async def close(self) -> None:
        if self._client is not None:
            await self._client.postgrest.aclose()
            self._client = None

    def __repr__(self) -> str:  # never show the key
        return f"SupabaseStore({self.url!r})"
