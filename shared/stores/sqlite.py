"""The embedded local store: one SQLite file, the same tables and semantics as Postgres."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

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
    FILE_COLUMNS,
    KEY_COLUMNS,
    OPEN_STATUSES,
    RESULT_COLUMNS,
    check_start,
    doc_rows,
    file_row,
    id_batches,
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
from shared.stores.sqlite_adapters import ADAPTER_ADDED_COLUMNS, ADAPTER_SCHEMA, SQLiteAdapters
from shared.stores.sqlite_evals import EVAL_SCHEMA, SQLiteEvals

SCHEMA = """
create table if not exists jobs (
  id text primary key, status text not null default 'queued', model text,
  total integer not null default 0, completed integer not null default 0, failed integer not null default 0,
  created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')), started_at text, finished_at text,
  updated_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')),
  error text, summary text, metadata text not null default '{}', owner text, dispatch_ref text,
  staged integer not null default 0, prompt_tokens integer not null default 0,
  completion_tokens integer not null default 0, task text
);
create table if not exists job_results (
  job_id text not null references jobs (id) on delete cascade, custom_id text not null,
  status text not null check (status in ('ok', 'error')), text text, parsed text, error text,
  finish_reason text, prompt_tokens integer, completion_tokens integer, latency_ms real,
  created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')),
  primary key (job_id, custom_id)
);
create table if not exists job_items (
  job_id text not null references jobs (id) on delete cascade, idx integer not null check (idx >= 0),
  custom_id text not null, item text not null,
  primary key (job_id, idx)
);
create unique index if not exists job_items_job_custom_id_idx on job_items (job_id, custom_id);
create trigger if not exists job_items_inserted after insert on job_items begin
  update jobs set staged = staged + 1 where id = new.job_id;
end;
create table if not exists files (
  id text primary key, purpose text not null default 'batch', filename text not null default 'input.jsonl',
  bytes integer not null default 0, lines integer not null default 0, rejected integer not null default 0,
  status text not null default 'uploaded', status_details text, owner text,
  created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ'))
);
create table if not exists file_items (
  file_id text not null references files (id) on delete cascade, idx integer not null check (idx >= 0),
  custom_id text not null, item text not null,
  primary key (file_id, idx)
);
create unique index if not exists file_items_file_custom_id_idx on file_items (file_id, custom_id);
create index if not exists jobs_owner_created_id_idx on jobs (owner, created_at desc, id desc);
create index if not exists jobs_created_id_idx on jobs (created_at desc, id desc);

create table if not exists api_keys (
  id text primary key, owner text not null, digest text not null unique, hint text not null default '',
  label text, created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')), revoked_at text
);
"""

#: the result counters' triggers (schema version 2: they count tokens too). A result row written
#: again with the same status and tokens changes nothing, so a replayed chunk is counted once.
TRIGGERS = """
drop trigger if exists job_results_inserted;
drop trigger if exists job_results_updated;
create trigger job_results_inserted after insert on job_results begin
  update jobs set completed = completed + (new.status = 'ok'), failed = failed + (new.status = 'error'),
         prompt_tokens = prompt_tokens + coalesce(new.prompt_tokens, 0),
         completion_tokens = completion_tokens + coalesce(new.completion_tokens, 0),
         updated_at = strftime('%Y-%m-%dT%H:%M:%fZ') where id = new.job_id;
end;
create trigger job_results_updated after update on job_results
when old.status is not new.status or old.prompt_tokens is not new.prompt_tokens
  or old.completion_tokens is not new.completion_tokens begin
  update jobs set completed = completed + (new.status = 'ok') - (old.status = 'ok'),
         failed = failed + (new.status = 'error') - (old.status = 'error'),
         prompt_tokens = prompt_tokens + coalesce(new.prompt_tokens, 0) - coalesce(old.prompt_tokens, 0),
         completion_tokens = completion_tokens + coalesce(new.completion_tokens, 0)
                             - coalesce(old.completion_tokens, 0)
   where id = new.job_id;
end;
update jobs set
  prompt_tokens = (select coalesce(sum(prompt_tokens), 0) from job_results r where r.job_id = jobs.id),
  completion_tokens = (select coalesce(sum(completion_tokens), 0) from job_results r where r.job_id = jobs.id);
"""
#: `pragma user_version` once TRIGGERS are in place (0: a file made before versions were kept)
SCHEMA_VERSION = 2

#: columns added after the first release (supabase/migrations/ adds them to Postgres): a file made by an
#: older version gets them when a store opens it
ADDED_COLUMNS = {"jobs": {"dispatch_ref": "text", "staged": "integer not null default 0",
                          "prompt_tokens": "integer not null default 0",
                          "completion_tokens": "integer not null default 0", "task": "text"},
                 **ADAPTER_ADDED_COLUMNS}

#: indexes on ADDED_COLUMNS: made once those are there
LATE_INDEXES = """
create index if not exists jobs_model_task_finished_idx on jobs (model, task, finished_at desc)
  where status = 'completed';
"""

#: most ids one `in (...)` list carries (SQLite's variable limit is 999 in old builds, 32766 since 3.32)
ID_BATCH = 500
#: idx per statement when a file's lines are copied into a job: each statement stays short (the store's
#: timeout, and the write lock other writers wait for)
COPY_SPAN = 50_000

_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ')"
_UPSERT = (
    f"insert into job_results ({', '.join(RESULT_COLUMNS)}) values ({', '.join('?' for _ in RESULT_COLUMNS)}) "
    "on conflict (job_id, custom_id) do update set "
    + ", ".join(f"{c} = excluded.{c}" for c in RESULT_COLUMNS[2:])
)


def _dump(v: Any) -> Any:
    return None if v is None else json.dumps(v, ensure_ascii=False)


class SQLiteStore(SQLiteEvals, SQLiteAdapters):
    def __init__(self, path: Path, *, timeout_s: float = DEFAULTS.store_timeout_s):
        self.path = path
        self.timeout_s = timeout_s
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(self.path, timeout=self.timeout_s)
            try:
                db.row_factory = sqlite3.Row
                await db.execute("pragma journal_mode = wal")
                await db.execute("pragma foreign_keys = on")
                await db.executescript(SCHEMA + EVAL_SCHEMA + ADAPTER_SCHEMA)
                for table, columns in ADDED_COLUMNS.items():
                    have = {row["name"] for row in await db.execute_fetchall(f"pragma table_info({table})")}
                    for name, kind in columns.items():
                        if name not in have:
                            await db.execute(f"alter table {table} add column {name} {kind}")
                await db.executescript(LATE_INDEXES)
                await db.commit()
                await self._upgrade(db)
            except BaseException:
                await db.close()  # else its thread outlives the loop
                raise
            self._db = db
        return self._db

    @staticmethod
    async def _upgrade(db: aiosqlite.Connection) -> None:
        """Bring the triggers up to SCHEMA_VERSION, once, in one transaction (two processes opening
        one old file: the second finds it done)."""
        if (await db.execute_fetchall("pragma user_version"))[0][0] >= SCHEMA_VERSION:
            return
        await db.execute("begin immediate")
        try:
            if (await db.execute_fetchall("pragma user_version"))[0][0] < SCHEMA_VERSION:
                for statement in _statements(TRIGGERS):
                    await db.execute(statement)
                await db.execute(f"pragma user_version = {SCHEMA_VERSION}")
            await db.commit()
        except BaseException:
            await db.rollback()
            raise

    async def _run(self, sql: str, params: Any = (), *, many: bool = False, fetch: bool = False,
                   count: bool = False) -> Any:
        """The rows (fetch), the number of rows changed (many, count), else []: one transaction, the
        store's timeout."""
        async with self._lock:
            try:
                db = await self._conn()
            except (OSError, sqlite3.Error) as e:  # a directory, a read-only place, not a database
                raise StoreError(f"sqlite {self.path}: cannot open: {e}") from e
            try:
                try:
                    async with asyncio.timeout(self.timeout_s):
                        if many:
                            cur = await db.executemany(sql, params)
                            rows: Any = cur.rowcount
                        else:
                            cur = await db.execute(sql, params)
                            rows = cur.rowcount if count else list(await cur.fetchall()) if fetch else []
                        await db.commit()
                        return rows
                except BaseException:
                    await self._undo(db)  # a batch that failed half-way leaves nothing for the next commit
                    raise
            except sqlite3.OperationalError as e:  # locked, disk I/O
                raise StoreUnavailable(f"sqlite {self.path}: {e}") from e
            except TimeoutError as e:
                raise StoreUnavailable(f"sqlite {self.path}: no answer in {self.timeout_s:g} s") from e
            except sqlite3.Error as e:
                raise StoreError(f"sqlite {self.path}: {e}") from e

    @staticmethod
    async def _undo(db: aiosqlite.Connection) -> None:
        try:
            await asyncio.shield(db.rollback())
        except (sqlite3.Error, ValueError):  # nothing to roll back, or the connection is closing
            pass

    async def accept(self, job: Job, *, total: int | None = None) -> bool:
        rows = await self._run("insert into jobs (id, status, model, total, metadata, owner, task) "
                               "values (?, 'queued', ?, ?, ?, ?, ?) on conflict (id) do nothing returning id",
                               (job.id, job.model, job.total if total is None else total, _dump(job.metadata),
                                job.owner, job.task), fetch=True)
        return bool(rows)

    async def begin(self, job: Job, *, total: int | None = None) -> None:
        await self._run(
            "insert into jobs (id, status, model, total, metadata, owner, task, started_at) "
            f"values (?, 'running', ?, ?, ?, ?, ?, {_NOW}) on conflict (id) do update set status = 'running', "
            "total = excluded.total, task = excluded.task, "
            "model = coalesce(excluded.model, jobs.model), metadata = excluded.metadata, finished_at = null, "
            "owner = coalesce(jobs.owner, excluded.owner), "
            f"error = null, started_at = coalesce(jobs.started_at, {_NOW}), updated_at = {_NOW}",
            (job.id, job.model, job.total if total is None else total, _dump(job.metadata), job.owner, job.task))

    async def done_ids(self, job_id: str, custom_ids: Sequence[str] | None = None) -> dict[str, ResultStatus]:
        if custom_ids is None:
            rows = await self._run("select custom_id, status from job_results where job_id = ?", (job_id,),
                                   fetch=True)
        else:
            rows = []
            for batch in id_batches(custom_ids, most=ID_BATCH):
                rows += await self._run("select custom_id, status from job_results where job_id = ? and custom_id "
                                        f"in ({', '.join('?' * len(batch))})", (job_id, *batch), fetch=True)
        return {r["custom_id"]: ResultStatus(r["status"]) for r in rows}

    async def write(self, job_id: str, results: Sequence[Result]) -> None:
        rows = await off_loop(_result_rows, job_id, results, rows=len(results))
        await self._run(_UPSERT, rows, many=True)  # one transaction per chunk

    async def finish(self, job_id: str, status: JobStatus, summary: Summary, *, if_open: bool = False) -> bool:
        only_open = f" and status in ({', '.join('?' * len(OPEN_STATUSES))})" if if_open else ""
        rows = await self._run(f"update jobs set status = ?, finished_at = {_NOW}, updated_at = {_NOW}, summary = ?, "
                               f"error = ? where id = ?{only_open} returning id",
                               (status.value, summary.model_dump_json(), summary.reason, job_id,
                                *(OPEN_STATUSES if if_open else ())), fetch=True)
        return bool(rows)

    async def set_dispatch_ref(self, job_id: str, ref: str | None) -> None:
        await self._run("update jobs set dispatch_ref = ? where id = ?", (ref, job_id))

    async def get_dispatch_ref(self, job_id: str) -> str | None:
        rows = await self._run("select dispatch_ref from jobs where id = ?", (job_id,), fetch=True)
        return rows[0]["dispatch_ref"] if rows else None

    async def get_job(self, job_id: str) -> JobRecord | None:
        rows = await self._run("select * from jobs where id = ?", (job_id,), fetch=True)
        return row_job(dict(rows[0])) if rows else None

    async def list_jobs(self, *, limit: int = 50, status: JobStatus | None = None, owner: str | None = None,
                        after: str | None = None) -> list[JobRecord]:
        rows = await self._run(
            "select * from jobs where (:st is null or status = :st) and (:owner is null or owner = :owner) "
            "and (:after is null or (created_at, id) < (select created_at, id from jobs "
            "     where id = :after and (:owner is null or owner = :owner))) "
            "order by created_at desc, id desc limit :limit",
            {"st": status and status.value, "owner": owner, "after": after, "limit": limit}, fetch=True)
        return [row_job(dict(r)) for r in rows]

    async def count_jobs(self, *, owner: str | None = None) -> dict[str, int]:
        rows = await self._run("select status, count(*) as n from jobs where (:owner is null or owner = :owner) "
                               "group by status", {"owner": owner}, fetch=True)
        return status_counts((r["status"], r["n"]) for r in rows)

    async def finished_summaries(self, model: str | None, task: str | None = None, *, limit: int = 20
                                 ) -> list[Summary]:
        rows = await self._run("select summary from jobs where status = 'completed' and model is ? and task is ? "
                               "and summary is not null order by finished_at desc limit ?", (model, task, limit),
                               fetch=True)
        return [Summary.model_validate_json(r["summary"]) for r in rows]

    async def results(self, job_id: str, *, after: str | None = None, limit: int = 1000) -> list[Result]:
        rows = await self._run("select * from job_results where job_id = ? and custom_id > ? order by custom_id "
                               "limit ?", (job_id, after or "", limit), fetch=True)
        return [row_result(dict(r)) for r in rows]

    async def latency_figures(self, job_id: str) -> LatencyFigures | None:
        rows = await self._run("select count(*) as results, count(latency_ms) as n, max(latency_ms) as top, "
                               "min(created_at) as first, (select started_at from jobs where id = :job) as started "
                               "from job_results where job_id = :job", {"job": job_id}, fetch=True)
        got = rows[0]
        if not got["results"]:
            return None

        async def at(p: int) -> float:  # the nearest-rank value: sorted in the database, one row back
            ranked = await self._run("select latency_ms from job_results where job_id = ? and latency_ms is not null "
                                     "order by latency_ms limit 1 offset ?", (job_id, rank_index(got["n"], p)),
                                     fetch=True)
            return ranked[0]["latency_ms"]

        n = got["n"]
        return LatencyFigures(p50_ms=await at(50) if n else None, p95_ms=await at(95) if n else None,
                              max_ms=got["top"], first_result_s=seconds_between(got["started"], got["first"]))

    async def stage_items(self, job_id: str, start_idx: int, items: Sequence[Item | Rejection]) -> int:
        return await self._stage("job_items", "job_id", job_id, start_idx, items)

    async def read_items(self, job_id: str, *, start_idx: int = 0, end_idx: int | None = None,
                         limit: int = 1000) -> list[Item | Rejection]:
        return await self._read("job_items", "job_id", job_id, start_idx, end_idx, limit)

    async def _stage(self, table: str, key: str, key_value: str, start_idx: int,
                     rows: Sequence[Item | Rejection]) -> int:
        check_start(start_idx)
        if not rows:
            return 0
        params = await off_loop(_staged_rows, key_value, start_idx, rows, rows=len(rows))
        return await self._run(f"insert into {table} ({key}, idx, custom_id, item) values (?, ?, ?, ?) "
                               f"on conflict ({key}, idx) do nothing", params, many=True)  # one transaction

    async def _read(self, table: str, key: str, key_value: str, start_idx: int, end_idx: int | None,
                    limit: int) -> list[Item | Rejection]:
        rows = await self._run(f"select item from {table} where {key} = ? and idx >= ? and (? is null or idx < ?) "
                               "order by idx limit ?", (key_value, start_idx, end_idx, end_idx, limit), fetch=True)
        return await off_loop(doc_rows, [r["item"] for r in rows], rows=len(rows))

    async def count_items(self, job_id: str) -> int:
        rows = await self._run("select staged from jobs where id = ?", (job_id,), fetch=True)
        return rows[0]["staged"] if rows else 0

    # ## Uploaded files

    async def create_file(self, rec: FileRecord) -> None:
        row = file_row(rec)
        await self._run(f"insert into files ({', '.join(FILE_COLUMNS)}) values ({', '.join('?' * len(FILE_COLUMNS))}) "
                        "on conflict (id) do nothing", tuple(row[c] for c in FILE_COLUMNS))

    async def finish_file(self, file_id: str, *, bytes: int, lines: int, rejected: int, status: str,
                          status_details: str | None = None) -> None:
        await self._run("update files set bytes = ?, lines = ?, rejected = ?, status = ?, status_details = ? "
                        "where id = ?", (bytes, lines, rejected, status, status_details, file_id))

    async def get_file(self, file_id: str) -> FileRecord | None:
        rows = await self._run("select * from files where id = ?", (file_id,), fetch=True)
        return row_file(dict(rows[0])) if rows else None

    async def stage_file_lines(self, file_id: str, start_idx: int, rows: Sequence[Item | Rejection]) -> int:
        return await self._stage("file_items", "file_id", file_id, start_idx, rows)

    async def create_key(self, rec: KeyRecord) -> None:
        row = key_row(rec)
        await self._run(f"insert into api_keys ({', '.join(KEY_COLUMNS)}) values ({', '.join('?' * len(KEY_COLUMNS))})",
                        tuple(row[c] for c in KEY_COLUMNS))

    async def find_key(self, digest: str) -> KeyRecord | None:
        rows = await self._run("select * from api_keys where digest = ?", (digest,), fetch=True)
        return KeyRecord.model_validate(dict(rows[0])) if rows else None

    async def list_keys(self, *, owner: str | None = None) -> list[KeyRecord]:
        rows = await self._run("select * from api_keys where (:o is null or owner = :o) order by created_at, id",
                               {"o": owner}, fetch=True)
        return [KeyRecord.model_validate(dict(r)) for r in rows]

    async def revoke_key(self, key_id: str) -> bool:
        n = await self._run(f"update api_keys set revoked_at = coalesce(revoked_at, {_NOW}) where id = ?", (key_id,),
                            count=True)
        return n > 0

    async def read_file_lines(self, file_id: str, *, start_idx: int = 0, end_idx: int | None = None,
                              limit: int = 1000) -> list[Item | Rejection]:
        return await self._read("file_items", "file_id", file_id, start_idx, end_idx, limit)

    async def copy_file_items(self, file_id: str, job_id: str) -> int:
        rows = await self._run("select max(idx) as top from file_items where file_id = ?", (file_id,), fetch=True)
        top = rows[0]["top"] if rows else None
        added = 0
        for lo in range(0, -1 if top is None else top + 1, COPY_SPAN):  # a statement per span of idx
            added += await self._run(
                "insert into job_items (job_id, idx, custom_id, item) select ?, idx, custom_id, item from file_items "
                "where file_id = ? and idx >= ? and idx < ? order by idx on conflict (job_id, idx) do nothing",
                (job_id, file_id, lo, lo + COPY_SPAN), count=True)
        return added

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None


def _statements(script: str) -> list[str]:
    """A script's statements, one by one (a trigger's body has semicolons of its own)."""
    out, part = [], ""
    for line in script.strip().splitlines(keepends=True):
        part += line
        if sqlite3.complete_statement(part):
            out.append(part.strip())
            part = ""
    return out


def _result_rows(job_id: str, results: Sequence[Result]) -> list[tuple]:
    rows = []
    for r in in_write_order(results):  # the order every store writes in (SQLite has one writer anyway)
        row = result_row(job_id, r)
        row["parsed"], row["error"] = _dump(row["parsed"]), _dump(row["error"])
        rows.append(tuple(row[c] for c in RESULT_COLUMNS))
    return rows


def _staged_rows(key_value: str, start_idx: int, rows: Sequence[Item | Rejection]) -> list[tuple]:
    return [(key_value, start_idx + i, r.custom_id, row_json(r)) for i, r in enumerate(rows)]
