"""Owners and keys in the store (issue 13): a job's owner is written on accept and kept by a worker's
begin; `list_jobs` filters by owner and pages by (created_at, id); API keys are kept as digests and
revoked. Run against SQLite, Postgres and Supabase (supabase-py -> PostgREST adapter -> real Postgres)."""

from __future__ import annotations

import asyncio

import pytest

from shared.contracts.errors import StoreError
from shared.contracts.models import Item, Job, JobStatus
from shared.contracts.owners import key_digest, new_key


def job(job_id: str, owner: str | None) -> Job:
    return Job(id=job_id, owner=owner, items=[Item(custom_id="a", prompt="hi")])


async def test_accept_writes_the_owner_and_begin_keeps_it(store):
    assert await store.accept(job("j1", "alice"))
    # a worker's begin from a reference that names no owner (a platform's own request) keeps it
    await store.begin(job("j1", None))
    assert (await store.get_job("j1")).owner == "alice"
    # a job a worker begins first (sent straight to a platform) gets the owner it names
    await store.begin(job("j2", "bob"))
    assert (await store.get_job("j2")).owner == "bob"
    assert (await store.get_job("j2")).status == JobStatus.running


async def test_list_jobs_by_owner_is_keyset_paginated_newest_first(store):
    for i in range(5):
        await store.accept(job(f"a{i}", "alice"))
        await store.accept(job(f"b{i}", "bob"))
        await asyncio.sleep(0.002)  # distinct created_at where the store's clock is coarse (SQLite: ms)
    await store.accept(job("n0", None))
    pages, after = [], None
    for _ in range(5):
        page = await store.list_jobs(owner="alice", limit=2, after=after)
        pages.append([j.id for j in page])
        if len(page) < 2:
            break
        after = page[-1].id
    assert pages == [["a4", "a3"], ["a2", "a1"], ["a0"]]
    assert {j.owner for j in await store.list_jobs(limit=100)} == {"alice", "bob", None}
    assert len(await store.list_jobs(limit=100)) == 11
    # a cursor that is not the owner's (or not there at all) gives an empty page
    assert await store.list_jobs(owner="alice", after="b3") == []
    assert await store.list_jobs(after="nope") == []
    # the status filter and the cursor together
    await store.begin(job("a3", "alice"))
    assert [j.id for j in await store.list_jobs(owner="alice", status=JobStatus.queued, after="a4")] == \
        ["a2", "a1", "a0"]


async def test_ties_on_created_at_are_broken_by_id(store):
    for i in range(4):
        await store.accept(job(f"t{i}", "tie"))
    await _same_created_at(store, [f"t{i}" for i in range(4)])
    first = await store.list_jobs(owner="tie", limit=2)
    rest = await store.list_jobs(owner="tie", limit=2, after=first[-1].id)
    assert [j.id for j in first] + [j.id for j in rest] == ["t3", "t2", "t1", "t0"]


async def _same_created_at(store, ids: list[str]) -> None:
    """Give the jobs one created_at, through the store's own connection."""
    stamp = "2026-11-24T10:00:00.000Z"
    if hasattr(store, "_run"):  # SQLite
        for i in ids:
            await store._run("update jobs set created_at = ? where id = ?", (stamp, i))
    elif hasattr(store, "_cursor"):  # Postgres
        async with store._cursor() as cur:
            await cur.execute("update jobs set created_at = %s where id = any(%s)", (stamp, ids))
    else:  # Supabase
        db = await store._db()
        await db.table("jobs").update({"created_at": stamp}).in_("id", ids).execute()


async def test_keys_are_kept_as_digests_found_listed_and_revoked(store):
    key, rec = new_key("alice", "laptop")
    other_key, other = new_key("bob")
    await store.create_key(rec)
    await store.create_key(other)
    found = await store.find_key(key_digest(key))
    assert found is not None and (found.id, found.owner, found.label, found.active) == (rec.id, "alice", "laptop", True)
    assert found.created_at is not None
    assert await store.find_key(key_digest("ljk_unknown")) is None
    assert [k.id for k in await store.list_keys(owner="alice")] == [rec.id]
    assert {k.id for k in await store.list_keys()} == {rec.id, other.id}
    # the key itself is never stored: only its digest and a few first characters
    assert all(key not in str(k.model_dump()) for k in await store.list_keys())
    assert await store.revoke_key(rec.id)
    revoked = await store.find_key(key_digest(key))
    assert revoked is not None and not revoked.active
    first = revoked.revoked_at
    assert await store.revoke_key(rec.id)  # again: True, and the first time stays
    assert (await store.find_key(key_digest(key))).revoked_at == first
    assert not await store.revoke_key("key_0000000000")
    assert (await store.find_key(key_digest(other_key))).active


async def test_a_repeated_key_digest_is_refused(store):
    _, rec = new_key("alice")
    await store.create_key(rec)
    with pytest.raises(StoreError):
        await store.create_key(rec.model_copy(update={"id": "key_ffffffffffff"}))
