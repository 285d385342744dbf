"""Streaming latency: from a chunk stored to the SSE client reading it (issue 13, item 4).

    python -m benchmarks.sse_latency [--items 150] [--rounds 3] [--latency-s 0.05] [--idle-s 5]

For each dispatcher, `--rounds` jobs of `--items` items run one after the other on a fake engine that
answers one request every `--latency-s` seconds (capacity 1, chunk_size 1: one chunk per result,
evenly spaced). The store's `write` is wrapped to note when each result was stored (when the write
returned: the result is durable); an SSE client reads `GET /v1/jobs/{id}/events` over HTTP from the
real API (shared/server/api, served by uvicorn on loopback) and notes when each chunk's results
arrived. The figure is arrival minus stored, per result, over every round: for every result, and for
those stored once the stream had seen the job run (its first results arrived). The stream opens as
soon as the job is accepted, while it is still queued; a fresh stream looks every SSE_POLL_S for
SSE_IDLE_AFTER_S, so a job that begins within that time is seen at once.

- local: the local dispatcher runs the job in the API's process; its events wake the stream.
- queue: the queue dispatcher; a worker (handler/worker.py) on the same engine takes the job from
  the real queue (upstash-redis -> the Upstash REST adapter, testkit/upstash.py -> redis-server) and
  publishes each chunk to the job's event stream, which the API polls. The adapter logs every
  command: the stream's reads (the `events` script: one Upstash command each) are counted while the
  jobs run, and while a viewer watches a job that stays queued (no worker): in the stream's first
  SSE_IDLE_AFTER_S, then for `--idle-s` more.

The SSE settings are the defaults (SSE_POLL_S, SSE_IDLE_POLL_S, SSE_IDLE_AFTER_S): nothing is tuned.
Everything runs in one process and one event loop (the API, the worker, the client), on this CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from handler.service import JobService
from handler.worker import Worker
from shared.contracts.models import Result
from shared.contracts.prepare import Limits
from shared.contracts.settings import DEFAULTS, Settings
from shared.queue import upstash as queue_module
from shared.queue.upstash import JobQueue
from shared.server.api import create_app
from shared.server.dispatch import LocalDispatcher, QueueDispatcher
from shared.stores.sqlite import SQLiteStore
from testkit import UPSTASH_TOKEN
from testkit.fake_gpu import FakeGpu
from testkit.serve import LoopServer


class TimedStore(SQLiteStore):
    """Notes when each result was stored (its chunk's write returned)."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.stored: dict[tuple[str, str], float] = {}

    async def write(self, job_id: str, results: Sequence[Result]) -> None:
        await super().write(job_id, results)
        now = time.monotonic()
        for r in results:
            self.stored.setdefault((job_id, r.custom_id), now)


def job_body(job_id: str, n: int) -> dict[str, Any]:
    return {"id": job_id, "chunk_size": 1, "items": [{"custom_id": f"c{i:05d}", "prompt": f"p{i}"} for i in range(n)]}


async def read_stream(client: httpx.AsyncClient, job_id: str,
                      on_first: Callable[[], None] = lambda: None) -> dict[tuple[str, str], float]:
    """(job id, custom_id) -> when its chunk arrived, reading the stream until `final`; `on_first`
    is called when the first results arrive."""
    arrived: dict[tuple[str, str], float] = {}
    data: list[str] = []
    async with client.stream("GET", f"/v1/jobs/{job_id}/events") as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and data:
                event = json.loads("".join(data))
                data = []
                now = time.monotonic()
                if event.get("results") and not arrived:
                    on_first()
                for res in event.get("results", []):
                    arrived.setdefault((job_id, res["custom_id"]), now)
                if event["type"] == "final":
                    break
    return arrived


class Reads:
    """The SSE reader's Upstash commands, from the adapter's log: the `events` script's EVALs."""

    def __init__(self, upstash: Any):
        self.upstash = upstash
        self.script = queue_module._EVENTS

    def count(self) -> int:
        return sum(1 for c in list(self.upstash.commands) if len(c) > 1 and c[1] == self.script)


def pct(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"n": len(ms), "p50": q[49], "p95": q[94], "max": ms[-1]}


async def run(dispatcher: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    settings = Settings(_env_file=None, rate_limit_per_minute=0, dispatcher=dispatcher)
    assert (settings.sse_poll_s, settings.sse_idle_poll_s, settings.sse_idle_after_s) == (
        DEFAULTS.sse_poll_s, DEFAULTS.sse_idle_poll_s, DEFAULTS.sse_idle_after_s)  # the defaults, untuned
    store = TimedStore(tmp / f"{dispatcher}.db")
    engine = FakeGpu(latency_s=args.latency_s, capacity=1)
    out: dict[str, Any] = {"dispatcher": dispatcher}
    stack = contextlib.AsyncExitStack()
    async with stack:
        stack.push_async_callback(store.close)
        worker = reads = None
        stop_worker: Any = None
        if dispatcher == "local":
            dispatch: Any = LocalDispatcher(settings, store, JobService(engine, settings, store=store))
        else:
            from testkit.upstash import RedisServer, UpstashAdapter

            redis = RedisServer()
            stack.callback(redis.stop)
            upstash = UpstashAdapter(redis.url, UPSTASH_TOKEN).start()
            stack.callback(upstash.stop)
            queue = JobQueue.connect(upstash.url, UPSTASH_TOKEN)
            stack.push_async_callback(queue.close)
            dispatch = QueueDispatcher(queue)
            reads = Reads(upstash)
            worker = Worker(engine, queue, store, concurrency=1, limits=Limits.from_settings(settings),
                            poll_min_s=0.05, poll_max_s=0.2)
            worker_task = asyncio.create_task(worker.run())

            async def stop_worker() -> None:
                if not worker_task.done():
                    worker.stop()
                    await worker_task

            stack.push_async_callback(stop_worker)
        stack.push_async_callback(dispatch.close)
        server = await stack.enter_async_context(LoopServer(create_app(settings, store=store, dispatcher=dispatch)))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=server.url, timeout=120))

        arrived: dict[tuple[str, str], float] = {}
        first: dict[str, float] = {}  # job id -> when its first results arrived
        running_s, reads_running = 0.0, 0
        for k in range(args.rounds):
            job_id = f"latency-{k}"
            r = await client.post("/v1/jobs", json=job_body(job_id, args.items))
            assert r.status_code == 202, r.text  # the stream opens at once: the job is still queued
            at_first: list[int] = []

            def on_first(job_id: str = job_id, at_first: list[int] = at_first) -> None:
                first[job_id] = time.monotonic()
                at_first.append(reads.count() if reads else 0)

            arrived |= await read_stream(client, job_id, on_first)
            running_s += time.monotonic() - first[job_id]
            reads_running += (reads.count() - at_first[0]) if reads else 0
        assert len(arrived) == args.items * args.rounds == len(store.stored), (len(arrived), len(store.stored))
        lat = {key: (t - store.stored[key]) * 1000 for key, t in arrived.items()}
        # the start: results stored before the stream's first ones arrived; the rest came while the job ran
        # and the stream knew it
        start = sorted(ms for (job_id, c), ms in lat.items() if store.stored[(job_id, c)] < first[job_id])
        steady = sorted(ms for (job_id, c), ms in lat.items() if store.stored[(job_id, c)] >= first[job_id])
        out |= {"all": pct(sorted(lat.values())), "steady": pct(steady), "start_n": len(start),
                "start_max_ms": start[-1] if start else 0.0}

        if reads is not None and stop_worker is not None:  # a viewer of a job that stays queued: no worker takes it
            await stop_worker()
            r = await client.post("/v1/jobs", json=job_body("waits", 1))
            assert r.status_code == 202, r.text
            viewer = asyncio.create_task(read_stream(client, "waits"))
            opened = reads.count()
            await asyncio.sleep(settings.sse_idle_after_s)
            fresh = reads.count()
            await asyncio.sleep(args.idle_s)
            idle = reads.count()
            viewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await viewer
            out["reads_per_s_running"] = reads_running / running_s
            out["reads_fresh"] = fresh - opened
            out["reads_per_s_idle"] = (idle - fresh) / args.idle_s
    return out


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = [await run(d, args, Path(tmp)) for d in ("local", "queue")]
    print(f"{args.rounds} rounds x {args.items} items, one result every {args.latency_s * 1000:.0f} ms, chunk_size 1;"
          f" SSE_POLL_S {DEFAULTS.sse_poll_s}, SSE_IDLE_POLL_S {DEFAULTS.sse_idle_poll_s},"
          f" SSE_IDLE_AFTER_S {DEFAULTS.sse_idle_after_s} (defaults)")
    print("latency: the chunk's write returned -> its results read by the SSE client")
    print(f"{'dispatcher':<11}{'which results':<15}{'n':>6}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    for r in rows:
        for name, key in (("all", "all"), ("while running", "steady")):
            f = r[key]
            print(f"{r['dispatcher']:<11}{name:<15}{f['n']:>6}{f['p50']:>9.1f}{f['p95']:>9.1f}{f['max']:>9.1f}")
    for r in rows:
        print(f"{r['dispatcher']}: {r['start_n']} results stored before the stream's first ones arrived"
              f" (over {args.rounds} job starts), the longest wait {r['start_max_ms']:.0f} ms")
        if "reads_per_s_running" in r:
            print(f"{r['dispatcher']}: the viewer's Upstash commands (the stream's reads):"
                  f" {r['reads_per_s_running']:.1f}/s while the job ran; for a job that stayed queued,"
                  f" {r['reads_fresh']} in the stream's first {DEFAULTS.sse_idle_after_s:g} s, then"
                  f" {r['reads_per_s_idle']:.1f}/s")
    for key, name in (("all", "every result"), ("steady", "results stored while the job ran")):
        ok = all(r[key]["p95"] <= 100 for r in rows)
        print(f"p95 at most 100 ms on both dispatchers, {name}: {'yes' if ok else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=150, help="items per job (one chunk each)")
    parser.add_argument("--rounds", type=int, default=3, help="jobs per dispatcher, one after the other")
    parser.add_argument("--latency-s", type=float, default=0.05, help="the fake engine's time per request")
    parser.add_argument("--idle-s", type=float, default=5.0, help="how long a viewer watches a queued job")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
