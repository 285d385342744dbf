"""Store write throughput: rows/s into a real PostgreSQL, through the Postgres backend and the
Supabase backend (supabase-py -> the PostgREST test transport -> the same PostgreSQL).

    python -m benchmarks.store [--rows 20000] [--database-url URL]

Without --database-url it starts a throwaway PostgreSQL cluster (testkit.pg, as the tests do). Chunks
are written one after another, as the runner writes them.
"""

from __future__ import annotations

import argparse
import asyncio
import time

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
    finally:
        if cluster is not None:
            cluster.destroy()


if __name__ == "__main__":
    asyncio.run(main())
