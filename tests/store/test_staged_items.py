"""A job's items in the store (issue 12, "big jobs"): staged in batches, idempotent on (job_id, idx),
read back as shards (idx ranges) page by page; rejections staged with them; done_ids per page of ids;
begin with the job's real total. The same suite runs against SQLite, Postgres and
Supabase (supabase-py -> the PostgREST adapter -> real Postgres)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest

from shared.contracts.errors import ErrorCode, StoreError, StoreUnavailable
from shared.contracts.models import Item, Job, JobStatus, Message, Rejection, Result, ResultStatus, Sampling
from shared.stores import supabase as supabase_store
from shared.stores.base import doc_row, item_doc, retrying, row_doc, row_json
from shared.stores.postgres import PostgresStore
from shared.stores.sqlite import SQLiteStore
from shared.stores.supabase import SupabaseStore


def items(start: int, n: int, *, prefix: str = "c") -> list[Item]:
    return [Item(custom_id=f"{prefix}{i:06d}", prompt=f"prompt {i}") for i in range(start, start + n)]


async def staged_job(store, job_id: str = "big-1") -> str:
    """A job row to stage under: `accept` a job that carries no items itself."""
    assert await store.accept(Job(id=job_id, items=[]))
    return job_id


async def test_batches_stage_in_order_and_pages_cross_them(store):
    job = await staged_job(store)
    assert await store.stage_items(job, 0, items(0, 300)) == 300
    assert await store.stage_items(job, 300, items(300, 250)) == 250
    assert await store.count_items(job) == 550
    got: list[Item] = []
    while page := await store.read_items(job, start_idx=len(got), limit=120):
        got.extend(page)
    assert got == items(0, 550)
    assert (await store.get_job(job)).status.value == "queued"  # staging leaves the job alone


async def test_a_re_sent_batch_changes_nothing(store):
    job = await staged_job(store)
    await store.stage_items(job, 0, items(0, 100))
    assert await store.stage_items(job, 0, items(0, 100)) == 0  # the same batch again
    assert await store.stage_items(job, 50, items(50, 100)) == 50  # half old, half new
    assert await store.count_items(job) == 150
    assert await store.read_items(job, limit=1000) == items(0, 150)


async def test_a_re_sent_idx_keeps_the_first_item(store):
    job = await staged_job(store)
    await store.stage_items(job, 0, items(0, 3))
    assert await store.stage_items(job, 1, [Item(custom_id="other", prompt="x")]) == 0
    assert [i.custom_id for i in await store.read_items(job)] == ["c000000", "c000001", "c000002"]


async def test_a_custom_id_twice_in_one_job_is_refused(store):
    job = await staged_job(store)
    await store.stage_items(job, 0, items(0, 3))
    with pytest.raises(StoreError):
        await store.stage_items(job, 3, [Item(custom_id="c000001", prompt="again")])
    with pytest.raises(StoreError):  # the whole batch is refused: nothing of it is kept
        await store.stage_items(job, 3, [*items(3, 5), Item(custom_id="c000002", prompt="again")])
    await store.stage_items(job, 8, items(8, 1))  # (a later commit must not carry the failed batch's rows)
    assert await store.count_items(job) == 4
    assert [i.custom_id for i in await store.read_items(job)] == ["c000000", "c000001", "c000002", "c000008"]


async def test_range_reads_are_shards(store):
    job = await staged_job(store)
    for start in range(0, 1000, 250):
        await store.stage_items(job, start, items(start, 250))
    shard = await store.read_items(job, start_idx=400, end_idx=700, limit=10_000)
    assert shard == items(400, 300)
    assert await store.read_items(job, start_idx=990, end_idx=2000) == items(990, 10)
    assert await store.read_items(job, start_idx=1000) == []
    assert await store.read_items(job, start_idx=5, end_idx=5) == []
    first, second = await store.read_items(job, start_idx=9, end_idx=100, limit=40), \
        await store.read_items(job, start_idx=49, end_idx=100, limit=40)
    assert first + second == items(9, 80)


async def test_unknown_job_and_empty_batches(store):
    assert await store.count_items("nope") == 0
    assert await store.read_items("nope") == []
    with pytest.raises(StoreError):  # the job row must exist first
        await store.stage_items("nope", 0, items(0, 2))
    job = await staged_job(store)
    assert await store.stage_items(job, 0, []) == 0
    with pytest.raises(ValueError):
        await store.stage_items(job, -1, items(0, 1))
    assert await store.count_items(job) == 0


async def test_unicode_and_nested_fields_round_trip(store):
    job = await staged_job(store)
    odd = [
        Item(custom_id="àlumne-1\t\\n", fields={"nom": "Núria 🌍", "notes": [1, 2.5, {"a": None, "b": [True]}],
                                               "quote": 'say "hi"\nand\\bye\ttab', "deep": {"x": {"y": {"z": "ç"}}}}),
        Item(custom_id="msgs", messages=[Message(role="system", content="Sigues breu."),
                                         Message(role="user", content="Què és \U0001d538?")],
             sampling=Sampling(temperature=0.2, max_tokens=64, stop=["\n\n"], seed=2**63 - 1)),
        Item(custom_id="batch-line", method="POST", url="/v1/chat/completions",
             body={"model": "m", "messages": [{"role": "user", "content": "日本語"}], "max_tokens": 5}),
    ]
    assert await store.stage_items(job, 0, odd) == 3
    assert await store.read_items(job) == odd


async def test_twenty_thousand_items_stage_quickly(store):
    job = await staged_job(store)
    big = [Item(custom_id=f"r{i:06d}", fields={"text": "x" * 900, "n": i}) for i in range(20_000)]
    started = time.perf_counter()
    for k in range(0, len(big), 5000):
        assert await store.stage_items(job, k, big[k:k + 5000]) == 5000
    took = time.perf_counter() - started
    assert await store.count_items(job) == 20_000
    assert took < 20, f"staging 20,000 items took {took:.1f} s"
    last = await store.read_items(job, start_idx=19_000, limit=5000)
    assert last == big[19_000:]


async def test_deleting_a_job_deletes_its_items(store, request):
    # no store deletes jobs; the database's cascade must (a purge, a retention job)
    job = await staged_job(store)
    await store.stage_items(job, 0, items(0, 10))
    keep = await staged_job(store, "big-keep")
    await store.stage_items(keep, 0, items(0, 2))
    if isinstance(store, SQLiteStore):
        await store.close()
        with sqlite3.connect(store.path) as db:
            db.execute("pragma foreign_keys = on")
            db.execute("delete from jobs where id = ?", (job,))
            left = db.execute("select job_id, count(*) from job_items group by job_id").fetchall()
        assert left == [(keep, 2)]
    else:
        assert isinstance(store, PostgresStore | SupabaseStore)
        pg = request.getfixturevalue("pg")
        pg.query("delete from jobs where id = %s returning id", job)
        assert pg.query("select job_id, count(*) from job_items group by job_id") == [(keep, 2)]
    assert await store.count_items(job) == 0 and await store.read_items(job) == []
    assert await store.read_items(keep) == items(0, 2)


async def test_a_batch_whose_answer_was_lost_is_retried_and_counted_once(store):
    # the worst case for a retry: the batch was stored, then the connection dropped before the answer
    job = await staged_job(store)
    calls = 0

    async def stage_then_drop() -> int:
        nonlocal calls
        calls += 1
        added = await store.stage_items(job, 0, items(0, 40))
        if calls < 3:
            raise StoreUnavailable("connection lost")
        return added

    assert await retrying(stage_then_drop, within_s=10) == 0
    assert calls == 3 and await store.count_items(job) == 40
    assert await store.read_items(job) == items(0, 40)


async def test_an_unreachable_database_is_store_unavailable(tmp_path):
    from testkit import SERVICE_KEY
    from testkit.postgrest import PostgrestTransport

    transport = PostgrestTransport("postgresql://postgres@127.0.0.1:1/none", SERVICE_KEY)
    stores = [PostgresStore("postgresql://postgres@127.0.0.1:1/none", timeout_s=1),
              SupabaseStore("http://supabase.test", SERVICE_KEY, transport=transport, timeout_s=1)]
    try:
        for st in stores:
            with pytest.raises(StoreUnavailable):
                await st.stage_items("j", 0, items(0, 1))
        with pytest.raises(StoreUnavailable):  # (supabase-py itself retries a GET on a 503 for a while)
            await stores[0].read_items("j")
    finally:
        for st in stores:
            await st.close()
        await transport.aclose()


# ## Supabase: what goes over the wire


async def test_supabase_batches_stay_under_the_byte_budget(pg, postgrest, monkeypatch):
    from testkit import SERVICE_KEY

    pg.truncate()
    monkeypatch.setattr(supabase_store, "STAGE_BYTES", 64 * 1024)
    sb = SupabaseStore("http://supabase.test", SERVICE_KEY, transport=postgrest, timeout_s=5)
    try:
        job = await staged_job(sb)
        big = [Item(custom_id=f"r{i:05d}", fields={"text": "é" * 700, "n": i}) for i in range(500)]
        postgrest.log.clear()
        assert await sb.stage_items(job, 0, big) == 500
        posts = [r for r in postgrest.log if r.method == "POST"]
        assert len(posts) > 1 and all(r.path == "/rest/v1/job_items" for r in posts)
        assert all(r.size <= 64 * 1024 for r in posts), [r.size for r in posts]
        assert max(r.size for r in posts) > 48 * 1024  # and they are filled, not split needlessly
        assert [row["idx"] for r in posts for row in r.body] == list(range(500))
        for r in posts:
            assert r.params["on_conflict"] == "job_id,idx"
            prefer = {p.strip() for p in r.headers["prefer"].split(",")}
            assert {"resolution=ignore-duplicates", "return=minimal", "count=exact"} <= prefer
        assert await sb.stage_items(job, 0, big) == 0
        assert await sb.read_items(job, limit=600) == big  # pages of at most 1000 rows, in order
    finally:
        await sb.close()


async def test_supabase_reads_past_a_thousand_rows_in_pages(pg, postgrest):
    from testkit import SERVICE_KEY

    pg.truncate()
    sb = SupabaseStore("http://supabase.test", SERVICE_KEY, transport=postgrest, timeout_s=5)
    try:
        job = await staged_job(sb)
        await sb.stage_items(job, 0, items(0, 2500))
        postgrest.log.clear()
        got = await sb.read_items(job, start_idx=100, end_idx=2400, limit=2200)
        assert got == items(100, 2200)
        gets = [r for r in postgrest.log if r.method == "GET"]
        assert [int(r.params["limit"]) for r in gets] == [1000, 1000, 200]
    finally:
        await sb.close()


def test_a_row_larger_than_the_budget_goes_alone():
    rows = [{"n": "x" * 10}, {"n": "y" * 100}, {"n": "z"}]
    assert [len(b) for b in supabase_store._batches(rows, 50)] == [1, 1, 1]
    assert [len(b) for b in supabase_store._batches(rows, 10_000)] == [3]


# ## Rejections are staged too: a job's rows are items and the items refused at the edge


def rejection(idx: int, cid: str | None = None, **kw) -> Rejection:
    return Rejection(custom_id=cid or f"bad{idx:06d}", index=idx, line=idx + 1, field="prompt",
                     code=ErrorCode.invalid_item, message=f"line {idx + 1} is not an item", **kw)


def mixed(start: int, n: int) -> list[Item | Rejection]:
    """Every third row refused."""
    return [rejection(i) if i % 3 == 2 else Item(custom_id=f"c{i:06d}", prompt=f"prompt {i}")
            for i in range(start, start + n)]


async def test_rejections_round_trip_in_idx_order(store):
    job = await staged_job(store)
    rows = mixed(0, 300)
    assert await store.stage_items(job, 0, rows[:200]) == 200
    assert await store.stage_items(job, 200, rows[200:]) == 100
    assert await store.count_items(job) == 300
    got = await store.read_items(job, limit=1000)
    assert got == rows
    assert [type(r) for r in got[:3]] == [Item, Item, Rejection]
    assert await store.read_items(job, start_idx=2, end_idx=3) == [rejection(2)]
    odd = Rejection(custom_id="çà \t\\\"q\"", index=-1, line=None, field="", code=ErrorCode.invalid_item,
                    message="Ünïcode 🌍 and \n newlines")
    assert await store.stage_items(job, 300, [odd]) == 1
    assert await store.read_items(job, start_idx=300) == [odd]


async def test_a_re_sent_batch_with_rejections_changes_nothing(store):
    job = await staged_job(store)
    rows = mixed(0, 90)
    await store.stage_items(job, 0, rows[:60])
    assert await store.stage_items(job, 30, rows[30:]) == 30  # half again
    assert await store.stage_items(job, 0, rows) == 0
    assert await store.count_items(job) == 90
    assert await store.read_items(job) == rows
    with pytest.raises(StoreError):  # a rejection's custom_id is the job's too: no item may take it
        await store.stage_items(job, 90, [Item(custom_id="bad000002", prompt="again")])


def test_the_encoding_is_one_place():
    item, refused = Item(custom_id="a", prompt="p"), rejection(4)
    assert row_doc(item) == item_doc(item) and "rejected" not in row_doc(item)
    assert row_doc(refused) == {"rejected": refused.model_dump(mode="json")}
    for row in (item, refused):
        assert doc_row(row_doc(row)) == row and doc_row(row_json(row)) == row
        assert json.loads(row_json(row)) == row_doc(row)


# ## done_ids per page of ids


def ok(cid: str) -> Result:
    return Result(custom_id=cid, status=ResultStatus.ok, text="t")


ODD_IDS = ["a,b", "(x)", 'q"uote', "back\\slash", "sp ace", " lead", "pct%20", "amp&x=1", "dot.in.(", "ç🌍",
           "null", "semi;colon", "col:on", "*star", "x" * 256]


async def test_done_ids_of_some_ids_only(store):
    job = await staged_job(store)
    await store.write(job, [ok(f"r{i:05d}") for i in range(0, 1500)])
    await store.write(job, [Result.failure(f"r{i:05d}", "timeout", "slow") for i in range(0, 1500, 7)])
    await store.write(job, [ok(c) for c in ODD_IDS])
    asked = [f"r{i:05d}" for i in range(1000, 2000)] + ["nope", "r01001", *ODD_IDS, "a", "b"]
    done = await store.done_ids(job, asked)
    want = {f"r{i:05d}": ResultStatus.error if i % 7 == 0 else ResultStatus.ok for i in range(1000, 1500)}
    want.update({c: ResultStatus.ok for c in ODD_IDS})
    assert done == want
    assert await store.done_ids(job, []) == {}
    assert await store.done_ids(job, ["nope"]) == {}
    assert await store.done_ids("other-job", asked[:10]) == {}
    assert len(await store.done_ids(job)) == 1500 + len(ODD_IDS)  # (all of them, as before)


async def test_supabase_done_ids_urls_stay_short(pg, postgrest):
    from testkit import SERVICE_KEY

    pg.truncate()
    sb = SupabaseStore("http://supabase.test", SERVICE_KEY, transport=postgrest, timeout_s=5)
    try:
        job = await staged_job(sb)
        long_ids = [f"{i:04d}-" + "é,\"(" * 60 for i in range(300)] + [f"s{i}" for i in range(500)]
        await sb.write(job, [ok(c) for c in long_ids[::2]])
        postgrest.log.clear()
        done = await sb.done_ids(job, long_ids)
        assert done == {c: ResultStatus.ok for c in long_ids[::2]}
        gets = [r for r in postgrest.log if r.method == "GET"]
        assert len(gets) > 4 and all(r.params["custom_id"].startswith("in.(") for r in gets)
        assert max(len(r.url) for r in gets) < 8 * 1024, max(len(r.url) for r in gets)
        assert all(r.params["job_id"] == f"eq.{job}" for r in gets)
    finally:
        await sb.close()


# ## begin with the job's real total


async def test_begin_with_a_total_keeps_the_counters(store):
    job = await staged_job(store)
    assert (await store.get_job(job)).total == 0
    options = Job(id=job, items=[], model="m", metadata={"k": 1})  # a shard's worker: options only
    await store.begin(options, total=5000)
    rec = await store.get_job(job)
    assert (rec.status, rec.total, rec.model, rec.metadata) == (JobStatus.running, 5000, "m", {"k": 1})
    assert rec.started_at is not None  # an accepted job's first run starts it
    started = rec.started_at
    await store.write(job, [ok("a"), ok("b"), Result.failure("c", "timeout", "slow")])
    await store.begin(options, total=5000)  # the next shard begins
    rec = await store.get_job(job)
    assert (rec.total, rec.completed, rec.failed, rec.started_at) == (5000, 2, 1, started)
    await store.begin(Job(id=job, items=items(0, 3)))  # no total: the job's own
    assert (await store.get_job(job)).total == 3
    assert await store.accept(Job(id="acc-total", items=[]), total=42)
    assert (await store.get_job("acc-total")).total == 42


# ## CPU work off the event loop


async def test_big_batches_are_encoded_and_decoded_off_the_loop(store, monkeypatch):
    from shared.stores import base, postgres, sqlite

    module, name = {SQLiteStore: (sqlite, "_staged_rows"), PostgresStore: (postgres, "_copy_rows"),
                    SupabaseStore: (supabase_store, "_staged_batches")}[type(store)]
    threads: dict[str, set[str]] = {"encode": set(), "decode": set()}
    encode, decode = getattr(module, name), base.doc_rows

    def spy_encode(*args):
        threads["encode"].add(threading.current_thread().name)
        return encode(*args)

    def spy_decode(docs):
        threads["decode"].add(threading.current_thread().name)
        return decode(docs)

    monkeypatch.setattr(module, name, spy_encode)
    monkeypatch.setattr(module, "doc_rows", spy_decode)
    job = await staged_job(store)
    await store.stage_items(job, 0, mixed(0, 2000))
    assert await store.read_items(job, limit=2000) == mixed(0, 2000)
    loop_thread = threading.current_thread().name
    assert threads["encode"] and loop_thread not in threads["encode"]
    assert threads["decode"] and loop_thread not in threads["decode"]
