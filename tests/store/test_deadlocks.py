"""Two workers writing the same job at once (a redelivery) must not deadlock each other
(issue 11, finding 7): every store writes a chunk's rows in one fixed order, by custom_id.

Runs against a real PostgreSQL, through the Postgres store and through the Supabase store
(supabase-py -> the PostgREST adapter -> the same PostgreSQL). Each writer owns its own store,
as two worker processes would. The chunks overlap and come in different orders, as two runners
that finish items in different orders write them.
"""

from __future__ import annotations

import asyncio
import random

import psycopg
import pytest

from shared.contracts.errors import StoreUnavailable
from shared.contracts.models import Job, Result, ResultStatus, Usage
from testkit import SERVICE_KEY

IDS = [f"c{i:03d}" for i in range(120)]
ROUNDS = 45  # two writers x 45 chunks = 90 writes, as in the report
WINDOW = 80  # ids per chunk: consecutive chunks overlap, and the two writers' chunks overlap


def ok(cid: str, writer: int) -> Result:
    return Result(custom_id=cid, status=ResultStatus.ok, text=f"writer {writer} " * 50, finish_reason="stop",
                  usage=Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5), latency_ms=1.0)


def chunks(writer: int) -> list[list[Result]]:
    """Overlapping windows of the same ids, each shuffled its own way."""
    rng = random.Random(writer)
    out = []
    for k in range(ROUNDS):
        start = (k * 7) % (len(IDS) - WINDOW)
        window = IDS[start:start + WINDOW]
        rng.shuffle(window)
        out.append([ok(cid, writer) for cid in window])
    return out


def open_store(kind: str, pg, transport):
    if kind == "postgres":
        from shared.stores.postgres import PostgresStore

        return PostgresStore(pg.url, timeout_s=20, pool_size=2)
    from shared.stores.supabase import SupabaseStore

    return SupabaseStore("http://supabase.test", SERVICE_KEY, transport=transport, timeout_s=20)


def is_deadlock(e: BaseException) -> bool:
    text = str(e)
    return "40P01" in text or "Deadlock" in text or "deadlock" in text


@pytest.fixture
def fast_deadlock_detection(pg):
    """Deadlocks are found after deadlock_timeout (1 s by default): 50 ms keeps the test short."""
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("alter database llmjobs set deadlock_timeout = '50ms'")
    yield
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("alter database llmjobs reset deadlock_timeout")


@pytest.mark.parametrize("kind", ["postgres", "supabase"])
async def test_two_writers_on_the_same_job_never_deadlock(kind, pg, fast_deadlock_detection):
    from testkit.postgrest import PostgrestTransport

    pg.truncate()
    # one PostgREST in front of the database, as on Supabase; each worker has its own client
    transport = PostgrestTransport(pg.url, SERVICE_KEY) if kind == "supabase" else None
    stores = [open_store(kind, pg, transport) for _ in range(2)]
    job = Job(id=f"deadlock-{kind}", items=[])
    await stores[0].begin(job)
    deadlocks = 0

    async def writer(n: int) -> None:
        nonlocal deadlocks
        for chunk in chunks(n):
            for _ in range(50):  # the runner retries StoreUnavailable (a deadlock is one): count them
                try:
                    await stores[n].write(job.id, chunk)
                    break
                except StoreUnavailable as e:
                    if not is_deadlock(e):
                        raise
                    deadlocks += 1
            else:
                raise AssertionError("a chunk deadlocked 50 times in a row")

    try:
        # several rounds of the pair, so an unlucky schedule cannot hide the problem
        for _ in range(3):
            await asyncio.gather(writer(0), writer(1))
        written = {cid for n in (0, 1) for chunk in chunks(n) for cid in (r.custom_id for r in chunk)}
        stored = await stores[0].results(job.id, limit=10_000)
        rows = pg.query("select custom_id, count(*) from job_results where job_id = %s group by custom_id",
                        job.id)
        record = await stores[0].get_job(job.id)
    finally:
        for s in stores:
            await s.close()
        if transport is not None:
            await transport.aclose()
    assert deadlocks == 0, f"{deadlocks} deadlock retries"
    # each result stored exactly once, and counted once
    assert sorted(r.custom_id for r in stored) == sorted(written)
    assert all(n == 1 for _, n in rows) and len(rows) == len(written)
    assert (record.completed, record.failed) == (len(written), 0)
