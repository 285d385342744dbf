"""Item staging throughput (issue 12, "big jobs"): items/s of ~1 KB each into a real PostgreSQL,
through the Postgres backend (COPY) and the Supabase backend (supabase-py -> the PostgREST test
transport -> the same PostgreSQL, batched upserts under a byte budget).

    python -m benchmarks.ingest [--items 50000] [--database-url URL]

Without --database-url it starts a throwaway PostgreSQL cluster (testkit.pg, as the tests do; fsync
off). Batches are staged one after another, as one API request would stage them; the items are built
before the clock starts. A last line re-sends every batch (a retried upload), which must add nothing.
The issue's target: at least 20,000 items/s into PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from shared.contracts.models import Item, Job
from shared.stores.postgres import PostgresStore
from shared.stores.supabase import SupabaseStore
from testkit import SERVICE_KEY
from testkit.postgrest import PostgrestTransport


def items(n: int) -> list[Item]:
    """n items of about 1 KB as the store keeps them (fields for a template, a little unicode)."""
    return [Item(custom_id=f"item-{i:08d}", fields={"alumne": f"Núria {i}", "resposta": "lorem ipsum " * 78,
                                                    "curs": "4t ESO", "n": i}) for i in range(n)]


async def stage(store, job_id: str, batch: list[Item], size: int) -> tuple[float, int]:
    """(items/s, rows added) for staging `batch` in batches of `size`."""
    started = time.perf_counter()
    added = 0
    for k in range(0, len(batch), size):
        added += await store.stage_items(job_id, k, batch[k:k + size])
    return len(batch) / (time.perf_counter() - started), added


async def run(name: str, make, batch: list[Item], size: int) -> None:
    store, transport = make()
    job_id = f"bench-{name.split()[0]}-{size}"
    try:
        await store.accept(Job(id=job_id, items=[]))
        rate, added = await stage(store, job_id, batch, size)
        again, re_added = await stage(store, job_id, batch, size)
        assert added == len(batch) and re_added == 0 and await store.count_items(job_id) == len(batch)
        print(f"{name:<40}{size:>7}{rate:>10.0f}{again:>12.0f}", flush=True)
    finally:
        await store.close()
        if transport is not None:
            await transport.aclose()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--database-url")
    args = ap.parse_args()
    cluster = None
    url = args.database_url
    if url is None:
        from testkit.pg import PgCluster

        cluster = PgCluster()
        url = cluster.url
    try:
        batch = items(args.items)
        size = len(batch[0].model_dump_json(exclude_none=True))
        print(f"{args.items} items of {size} bytes (JSON) per run, staged batch after batch into PostgreSQL")
        print(f"{'backend':<40}{'batch':>7}{'items/s':>10}{'re-sent/s':>12}")
        for n in (1000, 5000):
            await run("postgres (psycopg, COPY)", lambda: (PostgresStore(url, timeout_s=60), None), batch, n)

            def supabase():
                transport = PostgrestTransport(url, SERVICE_KEY)
                return SupabaseStore("http://supabase.test", SERVICE_KEY, transport=transport, timeout_s=60), transport

            await run("supabase (supabase-py, test transport)", supabase, batch, n)
    finally:
        if cluster is not None:
            cluster.destroy()


if __name__ == "__main__":
    asyncio.run(main())
