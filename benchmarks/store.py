"""Store write throughput: rows/s into a real PostgreSQL, through the Postgres backend and the
Supabase backend (supabase-py -> the PostgREST test transport -> the same PostgreSQL).

    python -m benchmarks.store [--rows 20000] [--database-url URL]

Without --database-url it starts a throwaway PostgreSQL cluster (testkit.pg, as the tests do). Chunks
are written one after another, as the runner writes them. A last run has two writers on one job at
once (a redelivery: overlapping chunks, each in its own order) and counts the deadlocks they hit,
which the stores' fixed write order (by custom_id) keeps at zero.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

from shared.contracts.errors import StoreUnavailable
from shared.contracts.models import Job, Result, ResultStatus, Usage
from shared.stores.postgres import PostgresStore
from shared.stores.supabase import SupabaseStore
from testkit import SERVICE_KEY
from testkit.postgrest import PostgrestTransport


def results(start: int, n: int) -> list[Result]:
    return [Result(custom_id=f"r{i:07d}", status=ResultStatus.ok, text=f"answer {i} " * 20,
                   parsed={"nota": i % 6, "feedback": "bé"}, finish_reason="stop",
                   usage=Usage(prompt_tokens=200, completion_tokens=40, total_tokens=240), latency_ms=1234.5)
            for i in range(start, start + n)]


async def measure(store, job_id: str, rows: int, chunk: int) -> float:
    await store.begin(Job(id=job_id, items=[]))
    chunks = [results(k, chunk) for k in range(0, rows, chunk)]
    started = time.perf_counter()
    for c in chunks:
        await store.write(job_id, c)
    return rows / (time.perf_counter() - started)


async def redelivery(stores, job_id: str, writes: int, chunk: int) -> tuple[int, float]:
    """Two writers, `writes` chunks in all, overlapping windows of one job's ids, each shuffled its
    own way: (deadlocks hit, seconds)."""
    await stores[0].begin(Job(id=job_id, items=[]))
    ids = chunk * 3
    deadlocks = 0

    async def writer(n: int) -> None:
        nonlocal deadlocks
        rng = random.Random(n)
        for k in range(writes // 2):
            rows = results((k * 7) % (ids - chunk), chunk)
            rng.shuffle(rows)
            for _ in range(100):  # the runner retries a deadlock (StoreUnavailable) the same way
                try:
                    await stores[n].write(job_id, rows)
                    break
                except StoreUnavailable as e:
                    if "deadlock" not in str(e).lower() and "40P01" not in str(e):
                        raise
                    deadlocks += 1
            else:
                raise RuntimeError("a chunk deadlocked 100 times in a row")

    started = time.perf_counter()
    await asyncio.gather(writer(0), writer(1))
    return deadlocks, time.perf_counter() - started


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--database-url")
    args = ap.parse_args()
    cluster = None
    url = args.database_url
    if url is None:
        from testkit.pg import PgCluster

        cluster = PgCluster()
        url = cluster.url
    try:
        print(f"{args.rows} rows per run, written chunk after chunk into PostgreSQL")
        print(f"{'backend':<40}{'chunk':>7}{'rows/s':>10}")
        for chunk in (10, 100):
            pgs = PostgresStore(url, timeout_s=30)
            rate = await measure(pgs, f"bench-pg-{chunk}", args.rows, chunk)
            await pgs.close()
            print(f"{'postgres (psycopg pool)':<40}{chunk:>7}{rate:>10.0f}")
            transport = PostgrestTransport(url, SERVICE_KEY)
            sb = SupabaseStore("http://supabase.test", SERVICE_KEY, transport=transport, timeout_s=30)
            rate = await measure(sb, f"bench-sb-{chunk}", args.rows, chunk)
            await sb.close()
            await transport.aclose()
            print(f"{'supabase (supabase-py, test transport)':<40}{chunk:>7}{rate:>10.0f}")
        print("\ntwo writers on one job at once (a redelivery), 90 writes of 80 overlapping rows")
        print(f"{'backend':<40}{'deadlocks':>10}{'seconds':>9}")
        stores = [PostgresStore(url, timeout_s=30, pool_size=2) for _ in range(2)]
        found, took = await redelivery(stores, "bench-pg-redelivery", 90, 80)
        for st in stores:
            await st.close()
        print(f"{'postgres (psycopg pool)':<40}{found:>10}{took:>9.2f}")
        transport = PostgrestTransport(url, SERVICE_KEY)
        stores = [SupabaseStore("http://supabase.test", SERVICE_KEY, transport=transport, timeout_s=30)
                  for _ in range(2)]
        found, took = await redelivery(stores, "bench-sb-redelivery", 90, 80)
        for st in stores:
            await st.close()
        await transport.aclose()
        print(f"{'supabase (supabase-py, test transport)':<40}{found:>10}{took:>9.2f}")
    finally:
        if cluster is not None:
            cluster.destroy()


if __name__ == "__main__":
    asyncio.run(main())
