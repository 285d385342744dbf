"""The jobs row counts its results' tokens (`prompt_tokens`, `completion_tokens`), kept by the database
like `completed` and `failed`: a chunk written twice is counted once, a row written again with other
tokens moves the counters by the difference. Run against SQLite, Postgres and Supabase."""

from __future__ import annotations

from shared.contracts.models import Job, Result, ResultStatus, Usage
from shared.stores.postgres import PostgresStore


def ok(cid: str, p: int, c: int) -> Result:
    return Result(custom_id=cid, status=ResultStatus.ok, text="t",
                  usage=Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c))


async def tokens(store, job_id: str) -> tuple[int, int, int, int]:
    rec = await store.get_job(job_id)
    return rec.prompt_tokens, rec.completion_tokens, rec.completed, rec.failed


async def test_a_chunk_written_twice_is_counted_once(store):
    job = Job(id="tok-1", items=[])
    await store.begin(job, total=4)
    assert await tokens(store, job.id) == (0, 0, 0, 0)
    chunk = [ok("a", 10, 3), ok("b", 20, 4), Result.failure("c", "timeout", "slow")]  # no usage: 0
    await store.write(job.id, chunk)
    assert await tokens(store, job.id) == (30, 7, 2, 1)
    await store.write(job.id, chunk)  # a redelivered chunk
    await store.write(job.id, list(reversed(chunk)))
    assert await tokens(store, job.id) == (30, 7, 2, 1)
    await store.write(job.id, [ok("c", 5, 6)])  # the failed item, run again: error -> ok
    assert await tokens(store, job.id) == (35, 13, 3, 0)
    await store.write(job.id, [ok("a", 12, 1)])  # same status, other tokens: the difference
    assert await tokens(store, job.id) == (37, 11, 3, 0)
    await store.write(job.id, [Result.failure("b", "timeout", "slow")])  # tokens gone with them
    assert await tokens(store, job.id) == (17, 7, 2, 1)
    await store.begin(job, total=4)  # a new run keeps the counters
    assert await tokens(store, job.id) == (17, 7, 2, 1)


async def test_jobs_count_their_own_tokens(store):
    for name in ("tok-a", "tok-b"):
        await store.begin(Job(id=name, items=[]), total=2)
    await store.write("tok-a", [ok("x", 2**31 - 1, 1), ok("y", 2**31 - 1, 1)])  # past int32: bigint
    await store.write("tok-b", [ok("x", 1, 2)])
    assert await tokens(store, "tok-a") == (2 * (2**31 - 1), 2, 2, 0)
    assert await tokens(store, "tok-b") == (1, 2, 1, 0)
    listed = {r.id: (r.prompt_tokens, r.completion_tokens) for r in await store.list_jobs()}
    assert listed == {"tok-a": (2 * (2**31 - 1), 2), "tok-b": (1, 2)}


async def test_deleted_results_take_their_tokens_off(store, request):
    if not isinstance(store, PostgresStore):
        return  # (the delete trigger is Postgres'; no store deletes results, a purge in SQL might)
    pg = request.getfixturevalue("pg")
    await store.begin(Job(id="tok-d", items=[]), total=2)
    await store.write("tok-d", [ok("x", 3, 4), ok("y", 5, 6)])
    pg.query("delete from job_results where job_id = 'tok-d' and custom_id = 'x' returning 1")
    assert await tokens(store, "tok-d") == (5, 6, 1, 0)


def test_the_migration_counts_results_stored_before_it(pg):
    # the backfill at the end of the migration: a jobs row whose counters were never kept
    from testkit.pg import ROOT

    pg.truncate()
    pg.query("insert into jobs (id, status) values ('old-tok', 'completed') returning id")
    pg.query("insert into job_results (job_id, custom_id, status, prompt_tokens, completion_tokens) values "
             "('old-tok', 'a', 'ok', 7, 8), ('old-tok', 'b', 'error', null, null) returning 1")
    pg.query("update jobs set prompt_tokens = 0, completion_tokens = 0 where id = 'old-tok' returning 1")
    migration = (ROOT / "supabase" / "migrations" / "20261124000100_job_token_counters.sql").read_text()
    import psycopg

    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(migration)  # guarded: it applies again
    assert pg.query("select prompt_tokens, completion_tokens, completed, failed from jobs where id = 'old-tok'") \
        == [(7, 8, 1, 1)]
    pg.truncate()
