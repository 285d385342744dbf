"""A SQLite file made by an older llm-jobs (no `dispatch_ref` or `staged` column, no job_items) is
brought up to date when a store opens it, keeping its jobs and results."""

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
