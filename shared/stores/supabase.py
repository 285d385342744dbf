"""The production store: Supabase over PostgREST, with supabase-py's async client.

- Every result row carries the full column set: PostgREST nulls a key a row lacks on merge.
- One request per chunk: a merge-upsert on (job_id, custom_id), `return=minimal`, its rows in
  custom_id order (two writers of one job lock them in the same order: no deadlocks).
- supabase-py never retries POST or PATCH; the runner retries StoreUnavailable with bounded
  backoff, which is safe because merge-upserts and these PATCHes are idempotent.
- Every request has a timeout (the httpx client's). Errors map into our tree at the boundary.
- Items (and a file's lines) are staged as upserts that ignore duplicates on (job_id, idx), split so
  that no request's body passes `STAGE_BYTES`; PostgREST counts the rows each one added
  (`Prefer: count=exact`). Building and measuring the rows is CPU work: off the event loop.
- Ids a request names (`done_ids` of a page) go as `in.(...)` filters, split so that no URL passes
  about `URL_ID_BYTES` of them (proxies and PostgREST refuse long URLs).
- `count_jobs` is one HEAD request a status with `Prefer: count=exact`: PostgREST has no GROUP BY.
- `latency_figures` asks for one row at a time, sorted by PostgREST: how many results have a latency (a HEAD
  with `count=exact`), the value at each nearest-rank position (`order=latency_ms&offset=k&limit=1`), the
  largest, the first result's time and the job's start; never the results themselves.
- `finish(if_open=True)` is one PATCH filtered on the status, `return=representation`: the rows it
  returns say whether it wrote (PostgREST runs one UPDATE: atomic).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from postgrest.exceptions import APIError
from postgrest.types import CountMethod, ReturnMethod

from shared.contracts.errors import StoreError, StoreUnavailable
from shared.contracts.files import FileRecord
from shared.contracts.models import (
    Item,
    Job,
    JobRecord,
    JobStatus,
    LatencyFigures,
    Rejection,
    Result,
    ResultStatus,
    Summary,
    rank_index,
)
from shared.contracts.owners import KeyRecord
from shared.contracts.settings import DEFAULTS
from shared.stores.base import (
    OPEN_STATUSES,
    _json,
    check_start,
    doc_rows,
    file_row,
    id_batches,
    in_write_order,
    key_row,
    off_loop,
    result_row,
    row_doc,
    row_file,
    row_job,
    row_result,
    seconds_between,
    status_counts,
)
from shared.stores.supabase_adapters import SupabaseAdapters
from shared.stores.supabase_evals import SupabaseEvals
from supabase import AsyncClient, AsyncClientOptions, acreate_client

#: PostgREST and Postgres error codes that mean "try again later"
_TRANSIENT_PREFIXES = ("PGRST000", "PGRST001", "PGRST002", "PGRST003", "08", "53", "57P", "57014", "40001",
                       "40P01", "5", "429")
_PAGE = 1000  # Supabase's default max rows per request
#: the most JSON one staging request carries (Supabase takes more; modest requests fail and retry cheaply)
STAGE_BYTES = 4 * 1024 * 1024
#: the most bytes of ids (quoted, percent-encoded) one `in.(...)` filter carries: the whole URL stays
#: under 8 KB, what proxies in front of PostgREST commonly take
URL_ID_BYTES = 6000
#: and the most ids
URL_IDS = 200


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


#: a file's lines per page when they are copied into a job (PostgREST pages them by _PAGE)
COPY_PAGE = 5 * _PAGE


def _result_rows(job_id: str, results: Sequence[Result]) -> list[dict]:
    return [result_row(job_id, r) for r in in_write_order(results)]


def _staged_batches(key: str, key_value: str, start_idx: int, rows: Sequence[Item | Rejection]) -> list[list[dict]]:
    docs = [{key: key_value, "idx": start_idx + k, "custom_id": r.custom_id, "item": row_doc(r)}
            for k, r in enumerate(rows)]
    return list(_batches(docs, STAGE_BYTES))


def _copied_batches(job_id: str, page: list[dict]) -> list[list[dict]]:
    docs = [{"job_id": job_id, "idx": r["idx"], "custom_id": r["custom_id"], "item": r["item"]} for r in page]
    return list(_batches(docs, STAGE_BYTES))


def _now() -> str:
    return datetime.now(UTC).isoformat()


class SupabaseStore(SupabaseEvals, SupabaseAdapters):
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

    async def accept(self, job: Job, *, total: int | None = None) -> bool:
        total = job.total if total is None else total
        async with self._mapped("accept") as db:
            created = await db.table("jobs").upsert(
                {"id": job.id, "status": "queued", "model": job.model, "total": total, "metadata": job.metadata,
                 "owner": job.owner, "task": job.task}, on_conflict="id", ignore_duplicates=True,
                returning=ReturnMethod.representation).execute()
        return bool(created.data)

    async def begin(self, job: Job, *, total: int | None = None) -> None:
        total = job.total if total is None else total
        async with self._mapped("begin") as db:
            await db.table("jobs").upsert(
                {"id": job.id, "status": "running", "model": job.model, "total": total,
                 "metadata": job.metadata, "owner": job.owner, "task": job.task, "started_at": _now()},
                on_conflict="id", ignore_duplicates=True, returning=ReturnMethod.minimal).execute()
            changes = {"status": "running", "total": total, "metadata": job.metadata, "task": job.task,
                       "finished_at": None, "error": None}
            if job.model is not None:  # as the other stores: coalesce(excluded.model, jobs.model)
                changes["model"] = job.model
            rows = (await db.table("jobs").update(changes, returning=ReturnMethod.representation)
                    .eq("id", job.id).execute()).data
            if rows and rows[0].get("started_at") is None:  # an accepted job's first run: coalesce(started_at, now())
                await db.table("jobs").update({"started_at": _now()}, returning=ReturnMethod.minimal) \
                    .eq("id", job.id).is_("started_at", "null").execute()

    async def done_ids(self, job_id: str, custom_ids: Sequence[str] | None = None) -> dict[str, ResultStatus]:
        done: dict[str, ResultStatus] = {}
        if custom_ids is not None:
            async with self._mapped("done_ids") as db:
                for batch in id_batches(custom_ids, most=URL_IDS, url_bytes=URL_ID_BYTES):
                    rows = (await db.table("job_results").select("custom_id,status").eq("job_id", job_id)
                            .in_("custom_id", batch).execute()).data  # at most URL_IDS rows: one page
                    done.update((r["custom_id"], ResultStatus(r["status"])) for r in rows)
            return done
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
        rows = await off_loop(_result_rows, job_id, results, rows=len(results))  # PostgREST inserts in this order
        async with self._mapped("write") as db:
            await db.table("job_results").upsert(rows, on_conflict="job_id,custom_id",
                                                 returning=ReturnMethod.minimal).execute()

    async def finish(self, job_id: str, status: JobStatus, summary: Summary, *, if_open: bool = False) -> bool:
        async with self._mapped("finish") as db:
            query = db.table("jobs").update(
                {"status": status.value, "finished_at": _now(), "summary": summary.model_dump(mode="json"),
                 "error": summary.reason}, returning=ReturnMethod.representation).eq("id", job_id)
            if if_open:  # one UPDATE ... WHERE status in (...): the rows it returns say whether it wrote
                query = query.in_("status", list(OPEN_STATUSES))
            written = (await query.execute()).data
        return bool(written)

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

    async def list_jobs(self, *, limit: int = 50, status: JobStatus | None = None, owner: str | None = None,
                        after: str | None = None) -> list[JobRecord]:
        def query(db: AsyncClient) -> Any:
            q = db.table("jobs").select("*")
            if status is not None:
                q = q.eq("status", status.value)
            return q.eq("owner", owner) if owner is not None else q

        async with self._mapped("list_jobs") as db:
            if after is None:
                rows = (await query(db).order("created_at", desc=True).order("id", desc=True).limit(limit)
                        .execute()).data
                return [row_job(r) for r in rows]
            # keyset after (created_at, id) of the job `after`: its ties by id, then older ones (two plain
            # filters rather than one `or=`: each is an index range)
            mark = db.table("jobs").select("created_at").eq("id", after)
            if owner is not None:
                mark = mark.eq("owner", owner)
            found = (await mark.limit(1).execute()).data
            if not found:
                return []
            at = found[0]["created_at"]
            rows = (await query(db).eq("created_at", at).lt("id", after).order("id", desc=True).limit(limit)
                    .execute()).data
            if len(rows) < limit:
                rows += (await query(db).lt("created_at", at).order("created_at", desc=True).order("id", desc=True)
                         .limit(limit - len(rows)).execute()).data
        return [row_job(r) for r in rows]

    async def finished_summaries(self, model: str | None, task: str | None = None, *, limit: int = 20
                                 ) -> list[Summary]:
        async with self._mapped("finished_summaries") as db:
            q = db.table("jobs").select("summary").eq("status", JobStatus.completed.value)
            q = q.is_("model", "null") if model is None else q.eq("model", model)
            q = q.is_("task", "null") if task is None else q.eq("task", task)
            rows = (await q.order("finished_at", desc=True).limit(limit).execute()).data
        return [Summary.model_validate(_json(r["summary"])) for r in rows if r["summary"] is not None]

    async def count_jobs(self, *, owner: str | None = None) -> dict[str, int]:
        # PostgREST has no GROUP BY (aggregates are off on Supabase): one HEAD request a status, `count=exact`
        # (its Content-Range carries the count, no rows travel), all at once
        async def count(db: AsyncClient, status: JobStatus) -> tuple[str, int]:
            q = db.table("jobs").select("id", count=CountMethod.exact, head=True).eq("status", status.value)
            got = await (q.eq("owner", owner) if owner is not None else q).execute()
            return status.value, got.count or 0

        async with self._mapped("count_jobs") as db:
            return status_counts(await asyncio.gather(*(count(db, s) for s in JobStatus)))

    async def results(self, job_id: str, *, after: str | None = None, limit: int = 1000) -> list[Result]:
        async with self._mapped("results") as db:
            rows = (await db.table("job_results").select("*").eq("job_id", job_id).gt("custom_id", after or "")
                    .order("custom_id").limit(limit).execute()).data
        return [row_result(r) for r in rows]

    async def latency_figures(self, job_id: str) -> LatencyFigures | None:
        def timed(db: AsyncClient) -> Any:  # the results with a latency (`gte.0`: PostgREST skips NULLs so)
            return db.table("job_results").select("latency_ms").eq("job_id", job_id).gte("latency_ms", 0)

        async with self._mapped("latency_figures") as db:
            first = (await db.table("job_results").select("created_at").eq("job_id", job_id).order("created_at")
                     .limit(1).execute()).data
            if not first:
                return None
            job = (await db.table("jobs").select("started_at").eq("id", job_id).limit(1).execute()).data
            n = (await db.table("job_results").select("latency_ms", count=CountMethod.exact, head=True)
                 .eq("job_id", job_id).gte("latency_ms", 0).execute()).count or 0
            values: list[float | None] = [None, None, None]
            if n:
                for k, at in enumerate((rank_index(n, 50), rank_index(n, 95))):
                    row = (await timed(db).order("latency_ms").offset(at).limit(1).execute()).data
                    values[k] = row[0]["latency_ms"] if row else None
                top = (await timed(db).order("latency_ms", desc=True).limit(1).execute()).data
                values[2] = top[0]["latency_ms"] if top else None
        return LatencyFigures(p50_ms=values[0], p95_ms=values[1], max_ms=values[2],
                              first_result_s=seconds_between(job[0]["started_at"] if job else None,
                                                             first[0]["created_at"]))

    async def stage_items(self, job_id: str, start_idx: int, items: Sequence[Item | Rejection]) -> int:
        return await self._stage("job_items", "job_id", job_id, start_idx, items)

    async def read_items(self, job_id: str, *, start_idx: int = 0, end_idx: int | None = None,
                         limit: int = 1000) -> list[Item | Rejection]:
        docs = await self._read_docs("job_items", "job_id", job_id, start_idx, end_idx, limit, "idx,item")
        return await off_loop(doc_rows, [d["item"] for d in docs], rows=len(docs))

    async def _stage(self, table: str, key: str, key_value: str, start_idx: int,
                     rows: Sequence[Item | Rejection]) -> int:
        check_start(start_idx)
        if not rows:
            return 0
        batches = await asyncio.to_thread(_staged_batches, key, key_value, start_idx, rows)  # CPU: off the loop
        return await self._upsert_batches(table, key, batches)

    async def _upsert_batches(self, table: str, key: str, batches: list[list[dict]]) -> int:
        added = 0
        async with self._mapped(f"stage {table}") as db:
            for batch in batches:
                done = await db.table(table).upsert(
                    batch, on_conflict=f"{key},idx", ignore_duplicates=True, returning=ReturnMethod.minimal,
                    count=CountMethod.exact).execute()
                added += done.count or 0
        return added

    async def _read_docs(self, table: str, key: str, key_value: str, start_idx: int, end_idx: int | None,
                         limit: int, columns: str) -> list[dict]:
        """Up to `limit` rows of `table` (their `columns`, idx among them) in idx order, a page at a time."""
        rows: list[dict] = []
        async with self._mapped(f"read {table}") as db:
            while len(rows) < limit:  # PostgREST answers at most _PAGE rows a request
                query = db.table(table).select(columns).eq(key, key_value).gte("idx", start_idx)
                if end_idx is not None:
                    query = query.lt("idx", end_idx)
                want = min(_PAGE, limit - len(rows))
                page = (await query.order("idx").limit(want).execute()).data
                rows.extend(page)
                if len(page) < want:
                    break
                start_idx = page[-1]["idx"] + 1
        return rows

    async def count_items(self, job_id: str) -> int:
        async with self._mapped("count_items") as db:
            rows = (await db.table("jobs").select("staged").eq("id", job_id).limit(1).execute()).data
        return rows[0]["staged"] if rows else 0

    # ## Uploaded files

    async def create_file(self, rec: FileRecord) -> None:
        async with self._mapped("create_file") as db:
            await db.table("files").upsert(file_row(rec), on_conflict="id", ignore_duplicates=True,
                                           returning=ReturnMethod.minimal).execute()

    async def finish_file(self, file_id: str, *, bytes: int, lines: int, rejected: int, status: str,
                          status_details: str | None = None) -> None:
        async with self._mapped("finish_file") as db:
            await db.table("files").update(
                {"bytes": bytes, "lines": lines, "rejected": rejected, "status": status,
                 "status_details": status_details}, returning=ReturnMethod.minimal).eq("id", file_id).execute()

    async def get_file(self, file_id: str) -> FileRecord | None:
        async with self._mapped("get_file") as db:
            rows = (await db.table("files").select("*").eq("id", file_id).limit(1).execute()).data
        return row_file(rows[0]) if rows else None

    async def stage_file_lines(self, file_id: str, start_idx: int, rows: Sequence[Item | Rejection]) -> int:
        return await self._stage("file_items", "file_id", file_id, start_idx, rows)

    async def create_key(self, rec: KeyRecord) -> None:
        async with self._mapped("create_key") as db:
            await db.table("api_keys").insert(key_row(rec), returning=ReturnMethod.minimal).execute()

    async def find_key(self, digest: str) -> KeyRecord | None:
        async with self._mapped("find_key") as db:
            rows = (await db.table("api_keys").select("*").eq("digest", digest).limit(1).execute()).data
        return KeyRecord.model_validate(rows[0]) if rows else None

    async def list_keys(self, *, owner: str | None = None) -> list[KeyRecord]:
        async with self._mapped("list_keys") as db:
            q = db.table("api_keys").select("*")
            if owner is not None:
                q = q.eq("owner", owner)
            rows = (await q.order("created_at").order("id").execute()).data
        return [KeyRecord.model_validate(r) for r in rows]

    async def revoke_key(self, key_id: str) -> bool:
        async with self._mapped("revoke_key") as db:
            rows = (await db.table("api_keys").update({"revoked_at": _now()}, returning=ReturnMethod.representation)
                    .eq("id", key_id).is_("revoked_at", "null").execute()).data
            if rows:
                return True
            return bool((await db.table("api_keys").select("id").eq("id", key_id).limit(1).execute()).data)

    async def read_file_lines(self, file_id: str, *, start_idx: int = 0, end_idx: int | None = None,
                              limit: int = 1000) -> list[Item | Rejection]:
        docs = await self._read_docs("file_items", "file_id", file_id, start_idx, end_idx, limit, "idx,item")
        return await off_loop(doc_rows, [d["item"] for d in docs], rows=len(docs))

    async def copy_file_items(self, file_id: str, job_id: str) -> int:
        # PostgREST runs no INSERT ... SELECT: the lines come over a page at a time and go back as
        # job_items, as they are (no decoding), in batches under STAGE_BYTES
        added, at = 0, 0
        while page := await self._read_docs("file_items", "file_id", file_id, at, None, COPY_PAGE,
                                            "idx,custom_id,item"):
            batches = await asyncio.to_thread(_copied_batches, job_id, page)
            added += await self._upsert_batches("job_items", "job_id", batches)
            at = page[-1]["idx"] + 1
        return added

    async def close(self) -> None:
        if self._client is not None:
            await self._client.postgrest.aclose()
            self._client = None

    def __repr__(self) -> str:  # never show the key
        return f"SupabaseStore({self.url!r})"
