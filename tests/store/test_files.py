"""Uploaded files (OpenAI's Files API): the record, its lines staged as they are read (items and
rejections, idempotent on (file_id, idx)), and a batch's copy of them into its job's items, counted
by `jobs.staged`. Run against SQLite, Postgres and Supabase (supabase-py -> PostgREST adapter -> real
Postgres)."""

from __future__ import annotations

import pytest

from shared.contracts.errors import ErrorCode, StoreError
from shared.contracts.files import FileRecord
from shared.contracts.models import Item, Job, Rejection
from shared.stores import postgres, sqlite
from shared.stores import supabase as supabase_store
from shared.stores.postgres import PostgresStore
from shared.stores.sqlite import SQLiteStore
from shared.stores.supabase import SupabaseStore


def lines(start: int, n: int) -> list[Item | Rejection]:
    """A file's lines, every fifth refused."""
    return [Rejection(custom_id=f"item-{i}", index=i, line=i + 1, field="body", code=ErrorCode.invalid_item,
                      message="not a request") if i % 5 == 4 else
            Item(custom_id=f"req-{i:05d}", method="POST", url="/v1/chat/completions",
                 body={"model": "m", "messages": [{"role": "user", "content": f"hola {i} ç"}]})
            for i in range(start, start + n)]


async def new_file(store, file_id: str = "file-abc", **kw) -> FileRecord:
    rec = FileRecord(id=file_id, filename="in.jsonl", owner="key-1", **kw)
    await store.create_file(rec)
    return rec


async def test_create_and_get(store):
    assert await store.get_file("file-none") is None
    rec = await new_file(store)
    got = await store.get_file(rec.id)
    assert got.model_dump(exclude={"created_at"}) == rec.model_dump(exclude={"created_at"})
    assert got.created_at is not None and (got.status, got.lines, got.owner) == ("uploaded", 0, "key-1")
    await store.create_file(rec.model_copy(update={"filename": "other.jsonl"}))  # a retried create: no change
    assert (await store.get_file(rec.id)).filename == "in.jsonl"
    anonymous = FileRecord()
    await store.create_file(anonymous)
    assert (await store.get_file(anonymous.id)).owner is None


async def test_finish_file(store):
    rec = await new_file(store)
    await store.finish_file(rec.id, bytes=2**33, lines=10, rejected=2, status="processed")
    got = await store.get_file(rec.id)
    assert (got.bytes, got.lines, got.rejected, got.status, got.status_details) == (2**33, 10, 2, "processed", None)
    await store.finish_file(rec.id, bytes=5, lines=1, rejected=0, status="error", status_details="line 3: bad")
    got = await store.get_file(rec.id)
    assert (got.status, got.status_details, got.bytes) == ("error", "line 3: bad", 5)
    await store.finish_file("file-none", bytes=1, lines=1, rejected=0, status="processed")  # left alone
    assert await store.get_file("file-none") is None


async def test_lines_stage_and_read_back(store):
    rec = await new_file(store)
    rows = lines(0, 1200)
    assert await store.stage_file_lines(rec.id, 0, rows[:700]) == 700
    assert await store.stage_file_lines(rec.id, 700, rows[700:]) == 500
    assert await store.stage_file_lines(rec.id, 600, rows[600:]) == 0  # sent again
    got: list = []
    while page := await store.read_file_lines(rec.id, start_idx=len(got), limit=450):
        got.extend(page)
    assert got == rows
    assert await store.read_file_lines(rec.id, start_idx=3, end_idx=5) == rows[3:5]
    assert isinstance(rows[4], Rejection) and await store.read_file_lines(rec.id, start_idx=4, limit=1) == [rows[4]]
    assert await store.read_file_lines(rec.id, start_idx=1200) == []
    assert await store.read_file_lines("file-none") == []


async def test_line_refusals(store):
    rec = await new_file(store)
    await store.stage_file_lines(rec.id, 0, lines(0, 3))
    with pytest.raises(StoreError):  # a custom_id twice in one file
        await store.stage_file_lines(rec.id, 3, [Item(custom_id="req-00001", prompt="again")])
    with pytest.raises(StoreError):  # the file must exist first
        await store.stage_file_lines("file-none", 0, lines(0, 1))
    with pytest.raises(ValueError):
        await store.stage_file_lines(rec.id, -1, lines(0, 1))
    assert await store.stage_file_lines(rec.id, 3, []) == 0
    assert await store.read_file_lines(rec.id) == lines(0, 3)
    other = await new_file(store, "file-other")  # another file may use the same custom_ids
    assert await store.stage_file_lines(other.id, 0, lines(0, 3)) == 3


async def test_copy_into_a_job_is_idempotent_and_counted(store):
    rec = await new_file(store)
    rows = lines(0, 2300)
    for k in range(0, len(rows), 1000):
        await store.stage_file_lines(rec.id, k, rows[k:k + 1000])
    assert await store.accept(Job(id="from-file", items=[]), total=len(rows))
    assert await store.copy_file_items(rec.id, "from-file") == 2300
    assert await store.count_items("from-file") == 2300  # jobs.staged counts them
    assert await store.read_items("from-file", start_idx=1000, end_idx=1100) == rows[1000:1100]
    got: list = []
    while page := await store.read_items("from-file", start_idx=len(got), limit=1000):
        got.extend(page)
    assert got == rows
    assert await store.copy_file_items(rec.id, "from-file") == 0  # again: nothing added
    assert await store.count_items("from-file") == 2300
    assert await store.read_file_lines(rec.id, limit=3000) == rows  # the file keeps its lines


async def test_copy_resumes_a_copy_cut_short(store, monkeypatch):
    # a copy in several statements (or pages) whose first ones went through before a retry
    monkeypatch.setattr(sqlite, "COPY_SPAN", 300)
    monkeypatch.setattr(postgres, "COPY_SPAN", 300)
    monkeypatch.setattr(supabase_store, "COPY_PAGE", 300)
    rec = await new_file(store)
    rows = lines(0, 1000)
    await store.stage_file_lines(rec.id, 0, rows)
    await store.accept(Job(id="resumed", items=[]), total=1000)
    await store.stage_items("resumed", 0, rows[:450])  # the first part is there already
    assert await store.copy_file_items(rec.id, "resumed") == 550
    assert await store.count_items("resumed") == 1000
    assert await store.read_items("resumed", limit=1000) == rows


async def test_copy_edge_cases(store):
    empty = await new_file(store, "file-empty")
    await store.accept(Job(id="j-empty", items=[]))
    assert await store.copy_file_items(empty.id, "j-empty") == 0
    assert await store.copy_file_items("file-none", "j-empty") == 0
    full = await new_file(store, "file-full")
    await store.stage_file_lines(full.id, 0, lines(0, 5))
    with pytest.raises(StoreError):  # the job must exist (accept)
        await store.copy_file_items(full.id, "j-none")
    await store.accept(Job(id="j-two", items=[]))
    await store.accept(Job(id="j-three", items=[]))
    assert await store.copy_file_items(full.id, "j-two") == 5
    assert await store.copy_file_items(full.id, "j-three") == 5  # one file, many batches
    assert await store.count_items("j-two") == await store.count_items("j-three") == 5


async def test_deleting_a_file_deletes_its_lines_not_its_jobs(store, request):
    rec = await new_file(store)
    await store.stage_file_lines(rec.id, 0, lines(0, 10))
    await store.accept(Job(id="kept", items=[]))
    await store.copy_file_items(rec.id, "kept")
    if isinstance(store, SQLiteStore):
        import sqlite3

        await store.close()
        with sqlite3.connect(store.path) as db:
            db.execute("pragma foreign_keys = on")
            db.execute("delete from files where id = ?", (rec.id,))
            assert db.execute("select count(*) from file_items").fetchone() == (0,)
    else:
        assert isinstance(store, PostgresStore | SupabaseStore)
        pg = request.getfixturevalue("pg")
        pg.query("delete from files where id = %s returning id", rec.id)
        assert pg.query("select count(*) from file_items") == [(0,)]
    assert await store.get_file(rec.id) is None
    assert await store.read_items("kept") == lines(0, 10)


async def test_supabase_copy_goes_in_batches_under_the_budget(pg, postgrest, monkeypatch):
    from testkit import SERVICE_KEY

    pg.truncate()
    monkeypatch.setattr(supabase_store, "STAGE_BYTES", 64 * 1024)
    sb = SupabaseStore("http://supabase.test", SERVICE_KEY, transport=postgrest, timeout_s=5)
    try:
        rec = await new_file(sb)
        big = [Item(custom_id=f"r{i:05d}", fields={"text": "é" * 700}) for i in range(400)]
        await sb.stage_file_lines(rec.id, 0, big)
        await sb.accept(Job(id="sb-copy", items=[]))
        postgrest.log.clear()
        assert await sb.copy_file_items(rec.id, "sb-copy") == 400
        posts = [r for r in postgrest.log if r.method == "POST"]
        assert len(posts) > 1 and all(r.path == "/rest/v1/job_items" and r.size <= 64 * 1024 for r in posts)
        assert [row["idx"] for r in posts for row in r.body] == list(range(400))
        assert {r.path for r in postgrest.log if r.method == "GET"} == {"/rest/v1/file_items"}
        assert await sb.read_items("sb-copy", limit=500) == big
    finally:
        await sb.close()
