"""A SQLite file made by an older llm-jobs (no `dispatch_ref` or `staged` column, no job_items; or no
token counters and no files) is brought up to date when a store opens it, keeping its jobs and results."""

from __future__ import annotations

import sqlite3

from shared.contracts.models import Item, JobStatus
from shared.stores.sqlite import SQLiteStore

OLD_SCHEMA = """
create table jobs (
  id text primary key, status text not null default 'queued', model text,
  total integer not null default 0, completed integer not null default 0, failed integer not null default 0,
  created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')), started_at text, finished_at text,
  updated_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')),
  error text, summary text, metadata text not null default '{}', owner text
);
create table job_results (
  job_id text not null references jobs (id) on delete cascade, custom_id text not null,
  status text not null check (status in ('ok', 'error')), text text, parsed text, error text,
  finish_reason text, prompt_tokens integer, completion_tokens integer, latency_ms real,
  created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')),
  primary key (job_id, custom_id)
);
insert into jobs (id, status, total, completed) values ('old', 'completed', 1, 1);
insert into job_results (job_id, custom_id, status, text) values ('old', 'c0', 'ok', 'kept');
"""


async def test_an_old_sqlite_file_gets_the_dispatch_ref_column(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
    store = SQLiteStore(path, timeout_s=5)
    try:
        record = await store.get_job("old")
        assert (record.status, record.completed) == (JobStatus.completed, 1)
        assert [r.text for r in await store.results("old")] == ["kept"]
        await store.set_dispatch_ref("old", "rp-9")
        assert await store.get_dispatch_ref("old") == "rp-9"
        assert await store.count_items("old") == 0
        assert await store.stage_items("old", 0, [Item(custom_id="c0", prompt="p")]) == 1
        assert await store.count_items("old") == 1
    finally:
        await store.close()
    reopened = SQLiteStore(path, timeout_s=5)  # opening it again changes nothing
    try:
        assert await reopened.get_dispatch_ref("old") == "rp-9"
        assert [i.custom_id for i in await reopened.read_items("old")] == ["c0"]
    finally:
        await reopened.close()


#: what the previous release made: dispatch_ref, staged and job_items, the old result triggers (status
#: only), no token counters, no files, no schema version
PREVIOUS_SCHEMA = """
create table jobs (
  id text primary key, status text not null default 'queued', model text,
  total integer not null default 0, completed integer not null default 0, failed integer not null default 0,
  created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')), started_at text, finished_at text,
  updated_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')),
  error text, summary text, metadata text not null default '{}', owner text, dispatch_ref text,
  staged integer not null default 0
);
create table job_results (
  job_id text not null references jobs (id) on delete cascade, custom_id text not null,
  status text not null check (status in ('ok', 'error')), text text, parsed text, error text,
  finish_reason text, prompt_tokens integer, completion_tokens integer, latency_ms real,
  created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')),
  primary key (job_id, custom_id)
);
create table job_items (
  job_id text not null references jobs (id) on delete cascade, idx integer not null check (idx >= 0),
  custom_id text not null, item text not null,
  primary key (job_id, idx)
);
create unique index job_items_job_custom_id_idx on job_items (job_id, custom_id);
create trigger job_items_inserted after insert on job_items begin
  update jobs set staged = staged + 1 where id = new.job_id;
end;
create trigger job_results_inserted after insert on job_results begin
  update jobs set completed = completed + (new.status = 'ok'), failed = failed + (new.status = 'error'),
         updated_at = strftime('%Y-%m-%dT%H:%M:%fZ') where id = new.job_id;
end;
create trigger job_results_updated after update of status on job_results
when old.status is not new.status begin
  update jobs set completed = completed + (new.status = 'ok') - (old.status = 'ok'),
         failed = failed + (new.status = 'error') - (old.status = 'error') where id = new.job_id;
end;
insert into jobs (id, status, total) values ('prev', 'running', 3);
insert into job_results (job_id, custom_id, status, prompt_tokens, completion_tokens)
  values ('prev', 'a', 'ok', 10, 2), ('prev', 'b', 'error', null, null);
"""


async def test_a_file_of_the_previous_release_counts_tokens(tmp_path):
    from shared.contracts.files import FileRecord
    from shared.contracts.models import Result, ResultStatus, Usage

    path = tmp_path / "prev.db"
    with sqlite3.connect(path) as db:
        db.executescript(PREVIOUS_SCHEMA)
    store = SQLiteStore(path, timeout_s=5)
    try:
        rec = await store.get_job("prev")
        assert (rec.completed, rec.failed, rec.prompt_tokens, rec.completion_tokens) == (1, 1, 10, 2)  # backfilled
        usage = Usage(prompt_tokens=5, completion_tokens=5, total_tokens=10)
        chunk = [Result(custom_id="b", status=ResultStatus.ok, usage=usage),
                 Result(custom_id="c", status=ResultStatus.ok, usage=usage)]
        await store.write("prev", chunk)
        await store.write("prev", chunk)  # counted once, by the new triggers
        rec = await store.get_job("prev")
        assert (rec.completed, rec.failed, rec.prompt_tokens, rec.completion_tokens) == (3, 0, 20, 12)
        await store.create_file(FileRecord(id="file-1"))  # and it has the files tables
        assert await store.stage_file_lines("file-1", 0, [Item(custom_id="x", prompt="p")]) == 1
    finally:
        await store.close()
    reopened = SQLiteStore(path, timeout_s=5)  # opening it again changes nothing
    try:
        rec = await reopened.get_job("prev")
        assert (rec.completed, rec.prompt_tokens, rec.completion_tokens) == (3, 20, 12)
        assert [r.custom_id for r in await reopened.read_file_lines("file-1")] == ["x"]
    finally:
        await reopened.close()
    with sqlite3.connect(path) as db:
        assert db.execute("pragma user_version").fetchone() == (2,)
