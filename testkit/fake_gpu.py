"""A stand-in GPU for fan-out tests and benchmarks: an engine with a fixed latency per request and a
fixed capacity (requests served at once; more wait for a slot), and a queue worker process on it
with the real queue and the real PostgreSQL store.

    python -m testkit.fake_gpu WORKER_ID
        env: DATABASE_URL, UPSTASH_REDIS_REST_URL, UPSTASH_REDIS_REST_TOKEN,
             LEASE_S (10), FAKE_LATENCY_S (0.01), FAKE_CAPACITY (64), DRAIN (1), CONCURRENCY (1)

It prints `STATS worker=... done=... requests=...` at the end; the worker's own log lines
(`job=<entry> worker=<id> attempt=N completed ...`) go to stdout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from handler.engine.base import Completion
from shared.contracts.prepare import Request


class FakeGpu:
    """`capacity` requests at once, each taking `latency_s`: throughput capacity / latency_s."""

    model_name = "fake-gpu"
    served_models = frozenset({"fake-gpu"})
    alive = True

    def __init__(self, *, latency_s: float, capacity: int):
        self.latency_s, self.capacity = latency_s, capacity
        self._slots = asyncio.Semaphore(capacity)
        self.requests = 0

    async def complete(self, request: Request) -> Completion:
        async with self._slots:
            await asyncio.sleep(self.latency_s)
            self.requests += 1
            return Completion(f"answer to {request.custom_id}", "stop", prompt_tokens=8, completion_tokens=4)

    async def close(self) -> None: ...


async def work(worker_id: str) -> None:
    from handler.worker import Worker
    from shared.queue.upstash import JobQueue
    from shared.stores.postgres import PostgresStore

    env = os.environ
    engine = FakeGpu(latency_s=float(env.get("FAKE_LATENCY_S", "0.01")), capacity=int(env.get("FAKE_CAPACITY", "64")))
    queue = JobQueue.connect(env["UPSTASH_REDIS_REST_URL"], env["UPSTASH_REDIS_REST_TOKEN"],
                             retry_backoff_s=0.2, retry_backoff_max_s=1)
    store = PostgresStore(env["DATABASE_URL"], timeout_s=10)
    worker = Worker(engine, queue, store, worker_id=worker_id, concurrency=int(env.get("CONCURRENCY", "1")),
                    lease_s=float(env.get("LEASE_S", "10")), drain=env.get("DRAIN", "1") == "1",
                    poll_min_s=0.05, poll_max_s=0.5)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop)
    try:
        stats = await worker.run()
    finally:
        await queue.close()
        await store.close()
    print(f"STATS worker={worker_id} done={stats.done} failed={stats.failed} requests={engine.requests}", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    asyncio.run(work(sys.argv[1]))
