"""The Postgres store: psycopg 3 async with a pool, over a direct or pooled URL (Supabase gives both)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

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
)
from shared.contracts.owners import KeyRecord
from shared.contracts.settings import DEFAULTS
from shared.stores.base import (
    FILE_COLUMNS,
    KEY_COLUMNS,
    OPEN_STATUSES,
    _json,
    check_start,
    doc_rows,
    file_row,
    in_write_order,
    key_row,
    off_loop,
    result_row,
    row_file,
    row_job,
    row_json,
    row_result,
    seconds_between,
    status_counts,
)
from shared.stores.postgres_adapters import PostgresAdapters
from shared.stores.postgres_evals import PostgresEvals

# One statement per chunk: the rows travel as one JSON array and are upserted together, in
# custom_id order (byte order, as `in_write_order` sorts them), so concurrent writers never deadlock.
_UPSERT = """
insert into job_results (job_id, custom_id, status, text, parsed, error, finish_reason,
                         prompt_tokens, completion_tokens, latency_ms)
select r.job_id, r.custom_id, r.status, r.text, r.parsed, r.error, r.finish_reason,
       r.prompt_tokens, r.completion_tokens, r.latency_ms
  from jsonb_to_recordset(%s::jsonb) as r(job_id text, custom_id text, status text, text text, parsed jsonb,
       error jsonb, finish_reason text, prompt_tokens int, completion_tokens int, latency_ms float8)
 order by r.custom_id collate "C"
on conflict (job_id, custom_id) do update set
  status = excluded.status, text = excluded.text, parsed = excluded.parsed, error = excluded.error,
  finish_reason = excluded.finish_reason, prompt_tokens = excluded.prompt_tokens,
  completion_tokens = excluded.completion_tokens, latency_ms = excluded.latency_ms
"""

# A job's latency figures in one statement: percentile_disc is the nearest-rank method (the first value whose
# cumulative share reaches the fraction: shared/contracts/models.py `rank_index`); aggregates skip NULLs.
_LATENCY = """
select count(*) as results,
       percentile_disc(0.5) within group (order by latency_ms) as p50,
       percentile_disc(0.95) within group (order by latency_ms) as p95,
       max(latency_ms) as top, min(created_at) as first,
       (select started_at from jobs where id = %(job)s) as started
  from job_results where job_id = %(job)s
"""

_BEGIN = """
insert into jobs (id, status, model, total, metadata, owner, task, started_at)
values (%s, 'running', %s, %s, %s, %s, %s, now())
on conflict (id) do update set status = 'running', total = excluded.total,
  model = coalesce(excluded.model, jobs.model), metadata = excluded.metadata, task = excluded.task,
  owner = coalesce(jobs.owner, excluded.owner),
  finished_at = null, error = null, started_at = coalesce(jobs.started_at, now())
"""

# Items (and a file's lines) are staged with COPY (issue 12): straight into the table when none of
# the batch's rows is there yet; a batch sent again (a unique violation) goes through a temporary
# table and `on conflict do nothing` instead, so it changes nothing. Rows go in idx order either way.
#: table -> its key column (job_items: job_id, file_items: file_id)
_STAGED = {"job_items": "job_id", "file_items": "file_id"}


def _copy_into(table: str) -> str:
    return f"copy {table} ({_STAGED[table]}, idx, custom_id, item) from stdin"


def _stage_again(table: str) -> str:
    return f"create temp table {table}_in ({_STAGED[table]} text, idx integer, custom_id text, item jsonb) " \
           "on commit drop"


def _merge_again(table: str) -> str:
    key = _STAGED[table]
    return (f"insert into {table} ({key}, idx, custom_id, item) select {key}, idx, custom_id, item from {table}_in "
            f"order by idx on conflict ({key}, idx) do nothing")


#: idx per statement when a file's lines are copied into a job: each statement stays well inside the
#: statement timeout, and a retry redoes little
COPY_SPAN = 50_000
_COPY_FILE = """
insert into job_items (job_id, idx, custom_id, item)
select %s, idx, custom_id, item from file_items
 where file_id = %s and idx >= %s and idx < %s
 order by idx
on conflict (job_id, idx) do nothing
"""


def _copy_text(v: str) -> str:
    """A value in COPY's text format (JSON text has no raw control characters; a custom_id may)."""
    return v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy_rows(key: str, start_idx: int, rows: Sequence[Item | Rejection]) -> str:
    """COPY's text for a batch: CPU work that grows with the batch (call it in a thread)."""
    j = _copy_text(key)
    return "".join(f"{j}\t{start_idx + k}\t{_copy_text(r.custom_id)}\t{_copy_text(row_json(r))}\n"
                   for k, r in enumerate(rows))


class PostgresStore(PostgresEvals, PostgresAdapters):
    def __init__(self, url: str, *, timeout_s: float = DEFAULTS.store_timeout_s,
                 pool_size: int = DEFAULTS.store_pool_size):
        self.timeout_s = timeout_s
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=timeout_s,
            # prepare_threshold=None: pooled URLs (pgbouncer/Supavisor, transaction mode) lack prepared statements
            kwargs={"autocommit": True, "prepare_threshold": None, "connect_timeout": max(1, int(timeout_s)),
                    "options": f"-c statement_timeout={int(timeout_s * 1000)}"},
            check=AsyncConnectionPool.check_connection,
        )
        self._opened = False

    @asynccontextmanager
    async def _cursor(self) -> AsyncIterator[psycopg.AsyncCursor[dict[str, Any]]]:
        try:
            if not self._opened:
                await self._pool.open(wait=False)
                self._opened = True
            async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                yield cur
        except PoolTimeout as e:
            raise StoreUnavailable(f"postgres: no connection within {self.timeout_s:g} s") from e
        except (psycopg.OperationalError, psycopg.errors.QueryCanceled) as e:
            raise StoreUnavailable(f"postgres: {type(e).__name__}: {e}".strip()) from e
        except psycopg.Error as e:
            raise StoreError(f"postgres: {type(e).__name__}: {e}".strip()) from e

    async def accept(self, job: Job, *, total: int | None = None) -> bool:
        async with self._cursor() as cur:
            await cur.execute("insert into jobs (id, status, model, total, metadata, owner, task) "
                              "values (%s, 'queued', %s, %s, %s, %s, %s) on conflict (id) do nothing returning id",
                              (job.id, job.model, job.total if total is None else total, Jsonb(job.metadata),
                               job.owner, job.task))
            return await cur.fetchone() is not None

    async def begin(self, job: Job, *, total: int | None = None) -> None:
        async with self._cursor() as cur:
            await cur.execute(_BEGIN, (job.id, job.model, job.total if total is None else total, Jsonb(job.metadata),
                                       job.owner, job.task))

    async def done_ids(self, job_id: str, custom_ids: Sequence[str] | None = None) -> dict[str, ResultStatus]:
        async with self._cursor() as cur:
            if custom_ids is None:
                await cur.execute("select custom_id, status from job_results where job_id = %s", (job_id,))
            else:  # one array parameter, however many ids
                await cur.execute("select custom_id, status from job_results where job_id = %s "
                                  "and custom_id = any(%s::text[])", (job_id, list(custom_ids)))
            return {r["custom_id"]: ResultStatus(r["status"]) for r in await cur.fetchall()}

    async def write(self, job_id: str, results: Sequence[Result]) -> None:
        rows = await off_loop(_results_json, job_id, results, rows=len(results))
        async with self._cursor() as cur:
            await cur.execute(_UPSERT, (rows,))

    async def finish(self, job_id: str, status: JobStatus, summary: Summary, *, if_open: bool = False) -> bool:
        # with if_open one conditional UPDATE: a racing caller waits for the row lock, then finds the
        # status changed and writes nothing (Postgres re-checks the WHERE on the row's new version)
        async with self._cursor() as cur:
            await cur.execute("update jobs set status = %s, finished_at = now(), summary = %s, error = %s "
                              "where id = %s and (not %s or status::text = any(%s)) returning id",
                              (status.value, Jsonb(summary.model_dump()), summary.reason, job_id, if_open,
                               list(OPEN_STATUSES)))
            return await cur.fetchone() is not None

    async def set_dispatch_ref(self, job_id: str, ref: str | None) -> None:
        async with self._cursor() as cur:
            await cur.execute("update jobs set dispatch_ref = %s where id = %s", (ref, job_id))

    async def get_dispatch_ref(self, job_id: str) -> str | None:
        async with self._cursor() as cur:
            await cur.execute("select dispatch_ref from jobs where id = %s", (job_id,))
            row = await cur.fetchone()
        return row["dispatch_ref"] if row else None

    async def get_job(self, job_id: str) -> JobRecord | None:
        async with self._cursor() as cur:
            await cur.execute("select * from jobs where id = %s", (job_id,))
            row = await cur.fetchone()
        return row_job(row) if row else None

    async def list_jobs(self, *, limit: int = 50, status: JobStatus | None = None, owner: str | None = None,
                        after: str | None = None) -> list[JobRecord]:
        st = status and status.value
        async with self._cursor() as cur:
            await cur.execute("select * from jobs where (%(st)s::text is null or status::text = %(st)s) "
                              "and (%(owner)s::text is null or owner = %(owner)s) "
                              "and (%(after)s::text is null or (created_at, id) < (select created_at, id from jobs "
                              "     where id = %(after)s and (%(owner)s::text is null or owner = %(owner)s))) "
                              "order by created_at desc, id desc limit %(limit)s",
                              {"st": st, "owner": owner, "after": after, "limit": limit})
            return [row_job(r) for r in await cur.fetchall()]

    async def count_jobs(self, *, owner: str | None = None) -> dict[str, int]:
        async with self._cursor() as cur:
            await cur.execute("select status::text as status, count(*) as n from jobs "
                              "where (%(owner)s::text is null or owner = %(owner)s) group by status",
                              {"owner": owner})
            return status_counts((r["status"], r["n"]) for r in await cur.fetchall())

    async def finished_summaries(self, model: str | None, task: str | None = None, *, limit: int = 20
                                 ) -> list[Summary]:
        async with self._cursor() as cur:
            await cur.execute("select summary from jobs where status = 'completed' and model is not distinct from "
                              "%s and task is not distinct from %s and summary is not null "
                              "order by finished_at desc limit %s", (model, task, limit))
            return [Summary.model_validate(_json(r["summary"])) for r in await cur.fetchall()]

    async def results(self, job_id: str, *, after: str | None = None, limit: int = 1000) -> list[Result]:
        async with self._cursor() as cur:
            await cur.execute("select * from job_results where job_id = %s and custom_id > %s "
                              "order by custom_id limit %s", (job_id, after or "", limit))
            return [row_result(r) for r in await cur.fetchall()]

    async def latency_figures(self, job_id: str) -> LatencyFigures | None:
        async with self._cursor() as cur:
            await cur.execute(_LATENCY, {"job": job_id})
            got = await cur.fetchone()
        if got is None or not got["results"]:
            return None
        return LatencyFigures(p50_ms=got["p50"], p95_ms=got["p95"], max_ms=got["top"],
                              first_result_s=seconds_between(got["started"], got["first"]))

    async def stage_items(self, job_id: str, start_idx: int, items: Sequence[Item | Rejection]) -> int:
        return await self._stage("job_items", job_id, start_idx, items)

    async def read_items(self, job_id: str, *, start_idx: int = 0, end_idx: int | None = None,
                         limit: int = 1000) -> list[Item | Rejection]:
        return await self._read("job_items", job_id, start_idx, end_idx, limit)

    async def _stage(self, table: str, key: str, start_idx: int, rows: Sequence[Item | Rejection]) -> int:
        check_start(start_idx)
        if not rows:
            return 0
        data = await asyncio.to_thread(_copy_rows, key, start_idx, rows)  # thousands of rows: off the loop
        async with self._cursor() as cur:
            try:
                async with cur.connection.transaction(), cur.copy(_copy_into(table)) as copy:
                    await copy.write(data)
                return len(rows)
            except psycopg.errors.UniqueViolation:
                pass  # some of these rows are there already (or a custom_id is taken: the merge says so)
            async with cur.connection.transaction():
                await cur.execute(_stage_again(table))
                async with cur.copy(f"copy {table}_in from stdin") as copy:
                    await copy.write(data)
                await cur.execute(_merge_again(table))
                return cur.rowcount

    async def _read(self, table: str, key: str, start_idx: int, end_idx: int | None,
                    limit: int) -> list[Item | Rejection]:
        async with self._cursor() as cur:  # as text: decoded below, off the loop for a big page
            await cur.execute(f"select item::text as item from {table} where {_STAGED[table]} = %s and idx >= %s "
                              "and (%s::int is null or idx < %s) order by idx limit %s",
                              (key, start_idx, end_idx, end_idx, limit))
            docs = [r["item"] for r in await cur.fetchall()]
        return await off_loop(doc_rows, docs, rows=len(docs))

    async def count_items(self, job_id: str) -> int:
        async with self._cursor() as cur:
            await cur.execute("select staged from jobs where id = %s", (job_id,))
            row = await cur.fetchone()
        return row["staged"] if row else 0

    # ## Uploaded files

    async def create_file(self, rec: FileRecord) -> None:
        row = file_row(rec)
        async with self._cursor() as cur:
            await cur.execute(f"insert into files ({', '.join(FILE_COLUMNS)}) values "
                              f"({', '.join(['%s'] * len(FILE_COLUMNS))}) on conflict (id) do nothing",
                              tuple(row[c] for c in FILE_COLUMNS))

    async def finish_file(self, file_id: str, *, bytes: int, lines: int, rejected: int, status: str,
                          status_details: str | None = None) -> None:
        async with self._cursor() as cur:
            await cur.execute("update files set bytes = %s, lines = %s, rejected = %s, status = %s, "
                              "status_details = %s where id = %s",
                              (bytes, lines, rejected, status, status_details, file_id))

    async def get_file(self, file_id: str) -> FileRecord | None:
        async with self._cursor() as cur:
            await cur.execute("select * from files where id = %s", (file_id,))
            row = await cur.fetchone()
        return row_file(row) if row else None

    async def stage_file_lines(self, file_id: str, start_idx: int, rows: Sequence[Item | Rejection]) -> int:
        return await self._stage("file_items", file_id, start_idx, rows)

    async def create_key(self, rec: KeyRecord) -> None:
        row = key_row(rec)
        async with self._cursor() as cur:
            await cur.execute(f"insert into api_keys ({', '.join(KEY_COLUMNS)}) values "
                              f"({', '.join(['%s'] * len(KEY_COLUMNS))})", tuple(row[c] for c in KEY_COLUMNS))

    async def find_key(self, digest: str) -> KeyRecord | None:
        async with self._cursor() as cur:
            await cur.execute("select * from api_keys where digest = %s", (digest,))
            row = await cur.fetchone()
        return KeyRecord.model_validate(row) if row else None

    async def list_keys(self, *, owner: str | None = None) -> list[KeyRecord]:
        async with self._cursor() as cur:
            await cur.execute("select * from api_keys where (%(o)s::text is null or owner = %(o)s) "
                              "order by created_at, id", {"o": owner})
            return [KeyRecord.model_validate(r) for r in await cur.fetchall()]

    async def revoke_key(self, key_id: str) -> bool:
        async with self._cursor() as cur:
            await cur.execute("update api_keys set revoked_at = coalesce(revoked_at, now()) where id = %s "
                              "returning id", (key_id,))
            return await cur.fetchone() is not None

    async def read_file_lines(self, file_id: str, *, start_idx: int = 0, end_idx: int | None = None,
                              limit: int = 1000) -> list[Item | Rejection]:
        return await self._read("file_items", file_id, start_idx, end_idx, limit)

    async def copy_file_items(self, file_id: str, job_id: str) -> int:
        async with self._cursor() as cur:
            await cur.execute("select max(idx) as top from file_items where file_id = %s", (file_id,))
            row = await cur.fetchone()
            top = row["top"] if row else None
            added = 0
            for lo in range(0, -1 if top is None else top + 1, COPY_SPAN):  # one INSERT ... SELECT per span
                await cur.execute(_COPY_FILE, (job_id, file_id, lo, lo + COPY_SPAN))
                added += cur.rowcount
        return added

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()
            self._opened = False


def _results_json(job_id: str, results: Sequence[Result]) -> str:
    return json.dumps([result_row(job_id, r) for r in in_write_order(results)], ensure_ascii=False)
