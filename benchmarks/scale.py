"""Big jobs at scale (issue 12): fan-out over workers, the cost of sharding, ingest and memory.

    python -m benchmarks.scale fan-out  [--items 100000] [--latency 0.1] [--capacity 64] [--workers 1,4,8]
    python -m benchmarks.scale shards   [--items 20000]  (1 shard against 4, on one worker)
    python -m benchmarks.scale real-engine [--items 2000] [--max-tokens 8]
    python -m benchmarks.scale upload   [--items 100000]  (POST /v1/files: items/s staged, the API's RSS)

Every run starts a throwaway PostgreSQL cluster (testkit.pg) and a redis-server behind the Upstash
REST adapter (testkit.upstash, with Upstash's request limits), submits one job through the job
lifecycle (items staged in PostgreSQL, one queue entry per shard), and starts worker processes
(`python -m testkit.fake_gpu`): the real worker, queue and store, on a stand-in GPU that serves
`capacity` requests at once, each taking `latency` seconds. The clock runs from the workers' start
to the job's row reading `completed`. Throughput is items/s; the ratios compare runs of this one
invocation, on this machine (2 cores: worker processes share them).

`upload` starts the API (`llm-jobs serve`, DISPATCHER=queue, DATABASE_URL on the cluster) in a
process of its own, writes a JSONL file of `--items` OpenAI Batch lines of about 1 KB to disk, and
uploads it with httpx, which streams it from disk (as the SDK does). The clock runs from the first
byte sent to the file's record (`processed`, every line staged in PostgreSQL); the API process's RSS is
sampled every 50 ms: its growth above the warmed-up API (one small upload first) is reported.

`real-engine` boots the real vLLM CPU engine with the embedded model in this process, stages a job
of `--items` prompts in a SQLite store, and runs it the way a worker runs a shard (`run_job` on a
ShardRef: items read from the store page by page, results written chunk by chunk), sampling this
process's RSS every 50 ms; then the same prompts go to bare vLLM (every request submitted to AsyncLLM
at once). Greedy decoding: both do the same tokens. Reported: RSS growth above the booted engine and
runner / bare throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

from shared.contracts.models import Item, Job
from shared.contracts.settings import Settings
from shared.queue.upstash import JobQueue
from shared.server.dispatch import QueueDispatcher
from shared.server.lifecycle import JobLifecycle
from shared.stores.postgres import PostgresStore
from testkit import UPSTASH_TOKEN


class Services:
    def __init__(self) -> None:
        from testkit.pg import PgCluster
        from testkit.upstash import RedisServer, UpstashAdapter

        self.pg = PgCluster()
        self.redis = RedisServer()
        self.upstash = UpstashAdapter(self.redis.url, UPSTASH_TOKEN).start()

    def reset(self) -> None:
        self.pg.truncate()
        self.redis.flush()

    def close(self) -> None:
        self.upstash.stop()
        self.redis.stop()
        self.pg.destroy()


def job(job_id: str, n: int) -> Job:
    return Job(id=job_id, chunk_size=100, items=[Item(custom_id=f"c{i:06d}", prompt=f"p{i}") for i in range(n)])


async def run_job(svc: Services, n: int, *, workers: int, shard_size: int, latency: float, capacity: int,
                  concurrency: int = 1) -> float:
    """Items/s of one job of n items on `workers` fake-GPU worker processes."""
    svc.reset()
    store = PostgresStore(svc.pg.url, timeout_s=60)
    queue = JobQueue.connect(svc.upstash.url, UPSTASH_TOKEN)
    lifecycle = JobLifecycle(store, QueueDispatcher(queue), Settings(shard_size=shard_size, _env_file=None))
    job_id = f"scale-{workers}w-{shard_size}"
    await lifecycle.submit(job(job_id, n))
    env = {**os.environ, "DATABASE_URL": svc.pg.url, "UPSTASH_REDIS_REST_URL": svc.upstash.url,
           "UPSTASH_REDIS_REST_TOKEN": UPSTASH_TOKEN, "FAKE_LATENCY_S": str(latency),
           "FAKE_CAPACITY": str(capacity), "CONCURRENCY": str(concurrency), "LEASE_S": "60"}
    started = time.perf_counter()
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-m", "testkit.fake_gpu", f"w{k}", env=env,
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for k in range(workers)]
    try:
        while (record := await lifecycle.get(job_id)).status != "completed":
            if record.status == "failed":
                raise RuntimeError(f"the job failed: {record.error}")
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        assert record.completed == n, record
    finally:
        for p in procs:
            await asyncio.wait_for(p.wait(), 120)
        await lifecycle.close()
    return n / elapsed


async def fan_out(svc: Services, args: argparse.Namespace) -> None:
    ideal = args.capacity / args.latency
    print(f"fan-out: {args.items} items, shards of {args.shard_size}, stand-in GPU: {args.capacity} at once x "
          f"{args.latency:g} s = {ideal:.0f} items/s per worker")
    print(f"{'workers':>8}{'items/s':>10}{'x 1 worker':>12}{'per worker vs ideal':>22}")
    base = None
    for w in (int(x) for x in args.workers.split(",")):
        rate = await run_job(svc, args.items, workers=w, shard_size=args.shard_size, latency=args.latency,
                             capacity=args.capacity)
        base = base or rate
        print(f"{w:>8}{rate:>10.0f}{rate / base:>12.2f}{rate / w / ideal:>22.2f}", flush=True)


async def shards(svc: Services, args: argparse.Namespace) -> None:
    """One worker, the same job as 1 shard, as 4, and in shards of each of --sizes: what sharding costs."""
    print(f"sharding overhead: {args.items} items on one worker ({args.concurrency} shard(s) at a time)")
    print(f"{'shard size':>11}{'shards':>8}{'items/s':>10}{'vs 1 shard':>12}")
    one = None
    sizes = [args.items, args.items // 4, *(int(x) for x in args.sizes.split(",") if x)]
    for size in sizes:
        rate = await run_job(svc, args.items, workers=1, shard_size=size, latency=args.latency,
                             capacity=args.capacity, concurrency=args.concurrency)
        one = one or rate
        print(f"{size:>11}{-(-args.items // size):>8}{rate:>10.0f}{rate / one:>12.3f}", flush=True)


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size from /proc (Linux)."""
    for line in open(f"/proc/{pid}/status", encoding="ascii"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class PeakRss:
    """The highest RSS of a process while the block runs, sampled every `every_s` in a thread."""

    def __init__(self, pid: int | str = "self", every_s: float = 0.05):
        import threading

        self.pid, self.every_s, self.peak = pid, every_s, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            self._done.wait(self.every_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pid))


async def real_engine(args: argparse.Namespace) -> None:
    import tempfile
    from pathlib import Path

    from benchmarks.throughput import bare, make_job
    from handler.engine.vllm_engine import VLLMEngine
    from handler.runner import run_job
    from shared.contracts.shards import plan_shards
    from shared.stores.sqlite import SQLiteStore

    engine = await VLLMEngine.start(Settings(max_model_len=2048, _env_file=None))
    await bare(engine, make_job(16, 8, 10), None)  # warm-up
    booted = rss_bytes()
    job = make_job(args.items, args.max_tokens, 100)
    store = SQLiteStore(Path(tempfile.mkdtemp()) / "jobs.db")
    await store.accept(job, total=job.total)
    for k in range(0, job.total, 2000):
        await store.stage_items(job.id, k, job.items[k:k + 2000])
    (ref,) = plan_shards(job, job.total, job.total)
    del job  # what a worker has: the reference
    before = rss_bytes()
    with PeakRss() as peak:
        started = time.perf_counter()
        async for _ in run_job(ref, engine, store=store):
            pass
        t_run = time.perf_counter() - started
    stored = (await store.get_job(ref.job_id)).completed
    t_bare, _ = await bare(engine, make_job(args.items, args.max_tokens, 100), None)
    await engine.close()
    await store.close()
    mib = 2**20
    print(f"real engine ({engine.model_name}, CPU): {args.items} items, max_tokens {args.max_tokens}; {stored} stored")
    print(f"RSS: booted {booted / mib:.0f} MiB; before the run {before / mib:.0f} MiB; peak during it "
          f"{peak.peak / mib:.0f} MiB: growth above the booted engine {(peak.peak - booted) / mib:.1f} MiB "
          "(target <= 150 MB)")
    print(f"runner {args.items / t_run:.2f} items/s ({t_run:.1f} s); bare vLLM {args.items / t_bare:.2f} items/s "
          f"({t_bare:.1f} s); runner / bare = {t_bare / t_run:.3f} (target >= 0.97)")


async def upload(svc: Services, args: argparse.Namespace) -> None:
    import json
    import tempfile
    from pathlib import Path

    import httpx

    from testkit.serve import free_port

    svc.reset()
    port = free_port()
    env = {**os.environ, "DATABASE_URL": svc.pg.url, "DISPATCHER": "queue", "UPSTASH_REDIS_REST_URL": svc.upstash.url,
           "UPSTASH_REDIS_REST_TOKEN": UPSTASH_TOKEN, "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "WARNING"}
    api = await asyncio.create_subprocess_exec(sys.executable, "-m", "shared.cli", "serve", "--port", str(port),
                                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    path = Path(tempfile.mkdtemp()) / "batch.jsonl"
    with path.open("w") as f:
        for i in range(args.items):
            f.write(json.dumps({"custom_id": f"req-{i:06d}", "method": "POST", "url": "/v1/chat/completions",
                                "body": {"model": "m", "max_tokens": 64, "messages": [
                                    {"role": "user", "content": f"Essay {i}: " + "lorem ipsum dolor " * 52}]}}) + "\n")
    size = path.stat().st_size
    try:
        async with httpx.AsyncClient(base_url=base, timeout=600) as http:
            for _ in range(200):
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            warm = await http.post("/v1/files", data={"purpose": "batch"},
                                   files={"file": ("warm.jsonl", path.open("rb").read(200_000), "application/jsonl")})
            assert warm.status_code == 200, warm.text
            before = rss_bytes(api.pid)
            with PeakRss(api.pid) as peak, path.open("rb") as f:
                started = time.perf_counter()
                r = await http.post("/v1/files", data={"purpose": "batch"}, files={"file": (path.name, f)})
                elapsed = time.perf_counter() - started
            assert r.status_code == 200 and r.json()["status"] == "processed", r.text[:500]
        staged = svc.pg.query("select count(*) from file_items where file_id = %s", r.json()["id"])[0][0]
        assert staged == args.items, staged
    finally:
        api.terminate()
        await asyncio.wait_for(api.wait(), 30)
    mib = 2**20
    print(f"upload: {args.items} lines, {size / mib:.1f} MiB, POST /v1/files -> staged in PostgreSQL: "
          f"{elapsed:.1f} s, {args.items / elapsed:,.0f} items/s (target >= 20,000)")
    print(f"API RSS: {before / mib:.0f} MiB warmed up; peak {peak.peak / mib:.0f} MiB: growth "
          f"{(peak.peak - before) / mib:.1f} MiB for a {size / mib:.0f} MiB file (target <= 100 MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["fan-out", "shards", "real-engine", "upload"])
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--items", type=int)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--capacity", type=int, default=64)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--workers", default="1,4,8")
    ap.add_argument("--sizes", default="1000,250", help="shards: more shard sizes to try")
    ap.add_argument("--concurrency", type=int, default=1, help="shards: entries one worker runs at once")
    args = ap.parse_args()
    if args.what == "real-engine":
        args.items = args.items or 2000
        asyncio.run(real_engine(args))
        return
    svc = Services()
    try:
        if args.what == "fan-out":
            args.items = args.items or 100_000
            asyncio.run(fan_out(svc, args))
        elif args.what == "upload":
            args.items = args.items or 100_000
            asyncio.run(upload(svc, args))
        else:
            args.items = args.items or 20_000
            asyncio.run(shards(svc, args))
    finally:
        svc.close()


if __name__ == "__main__":
    main()
