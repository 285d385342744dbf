"""Estimates against the time jobs really take, on the real engine (issue 15).

    python -m benchmarks.estimates [--sizes 16,32,64,32,16] [--max-tokens 48]

Jobs go one after another through `JobLifecycle` with the local dispatcher on one vLLM engine and
a throwaway SQLite store, as `llm-jobs serve` runs them. Before each, the estimate a submit would
answer (`lifecycle.throughput(model).seconds(n)`); after it, the time from submit to its end. The
first job has nothing measured (ESTIMATE_ITEMS_PER_S); each later one is estimated from those before.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from handler.engine.vllm_engine import VLLMEngine
from handler.service import JobService
from shared.contracts.models import Item, Job, Sampling
from shared.contracts.settings import Settings
from shared.server.dispatch import LocalDispatcher
from shared.server.lifecycle import JobLifecycle
from shared.stores.sqlite import SQLiteStore

TOPICS = ["the sea", "autumn", "a robot", "coffee", "the moon", "a library", "trains", "mountains",
          "a lost key", "rain", "friendship", "a market", "bicycles", "winter", "a lighthouse", "music"]


def make_job(k: int, n: int, max_tokens: int) -> Job:
    items = [Item(custom_id=f"e{i:04d}", prompt=f"Write two sentences about {TOPICS[(i + k) % len(TOPICS)]} (#{i}).")
             for i in range(n)]
    return Job(id=f"estimate-{k}", items=items, sampling=Sampling(temperature=0.0, max_tokens=max_tokens))


async def main(sizes: list[int], max_tokens: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(_env_file=None, sqlite_path=Path(tmp) / "jobs.db", estimate_cache_s=0)
        engine = await VLLMEngine.start(settings)
        store = SQLiteStore(settings.sqlite_path)
        lifecycle = JobLifecycle(store, LocalDispatcher(settings, store, JobService(engine, settings, store=store)),
                                 settings)
        rows = []
        try:
            for k, n in enumerate(sizes):
                job = make_job(k, n, max_tokens)
                rate = await lifecycle.throughput(job.model, job.task)
                started = time.perf_counter()
                await lifecycle.submit(job)
                async for _ in lifecycle.follow(job.id):  # until its final event
                    pass
                took = time.perf_counter() - started
                rows.append((k, n, rate.from_jobs, rate.items_per_s, rate.seconds(n), took))
        finally:
            await lifecycle.close()
            await engine.close()
    print(f"{len(sizes)} jobs one after another, greedy, max_tokens {max_tokens}, on {settings.served_model} (CPU)")
    print(f"{'job':>3} {'items':>5} {'from jobs':>9} {'items/s':>8} {'estimate s':>10} {'actual s':>8} {'error':>7}")
    errors = []
    for k, n, jobs, ips, est, took in rows:
        error = (est - took) / took
        if jobs:
            errors.append(abs(error))
        print(f"{k:>3} {n:>5} {jobs:>9} {ips:>8.2f} {est:>10.1f} {took:>8.1f} {error:>+7.0%}")
    if errors:
        print(f"measured estimates: mean absolute error {statistics.mean(errors):.0%}, "
              f"worst {max(errors):.0%} (jobs 1..{len(rows) - 1}; job 0 used ESTIMATE_ITEMS_PER_S)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="16,32,64,32,16", help="items per job, in order")
    ap.add_argument("--max-tokens", type=int, default=48)
    a = ap.parse_args()
    asyncio.run(main([int(x) for x in a.sizes.split(",")], a.max_tokens))
