"""Worker faults on the real engine, a real PostgreSQL store and the real queue
(upstash-redis -> the REST adapter -> redis-server)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from handler.worker import Worker
from shared.contracts.errors import EngineDeadError
from shared.contracts.models import JobStatus
from shared.stores.postgres import PostgresStore
from tests.conftest import UPSTASH_TOKEN, make_queue
from tests.integration.test_persistence import counters_match, rows, staggered


def worker_env(pg, upstash, **extra) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": pg.url, "UPSTASH_REDIS_REST_URL": upstash.url,
            "UPSTASH_REDIS_REST_TOKEN": UPSTASH_TOKEN, "MAX_MODEL_LEN": "2048", "LOG_LEVEL": "INFO",
            **{k: str(v) for k, v in extra.items()}}


def start_worker(env, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "shared.cli", "worker", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_rows(pg, job_id: str, n: int, proc: subprocess.Popen, timeout: float = 400) -> int:
    deadline = time.monotonic() + timeout
    while (have := len(rows(pg, job_id))) < n:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.2)
    return have


async def test_sigkill_mid_job_then_another_worker_finishes_after_the_lease(pg, upstash, redis_server):
    redis_server.flush()
    q = make_queue(upstash)
    await q.enqueue(staggered(64, "kill-worker"))
    env = worker_env(pg, upstash, LEASE_S=8)
    first = start_worker(env, "--worker-id", "doomed")
    await asyncio.to_thread(wait_rows, pg, "kill-worker", 8, first)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    before = rows(pg, "kill-worker")
    assert (await q.stats())["running"] == 1  # still leased to the dead worker

    second = start_worker(env, "--drain", "--worker-id", "rescuer")
    out, _ = await asyncio.to_thread(second.communicate, timeout=600)
    assert second.returncode == 0, out[-3000:]
    after = rows(pg, "kill-worker")
    assert len(after) == 64 and {k: after[k] for k in before} == before
    counters_match(pg, "kill-worker")
    assert pg.query("select status::text from jobs where id = 'kill-worker'") == [("completed",)]
    assert await q.stats() == {"queued_high": 0, "queued_default": 0, "queued_train": 0, "running": 0,
                               "retrying": 0, "dead": 0, "lease_expiries": 1}  # the dead worker's lease
    assert "job=kill-worker worker=rescuer attempt=2" in out
    print(f"\nSIGKILL: {len(before)}/64 stored when killed; the second worker resumed at attempt 2 and "
          f"finished: rows={len(after)}")
    await q.close()


async def test_sigterm_hands_the_job_back_at_once(pg, upstash, redis_server):
    redis_server.flush()
    q = make_queue(upstash)
    await q.enqueue(staggered(64, "term-worker"))
    # a lease far longer than the test: only an immediate hand-back lets the second worker in
    env = worker_env(pg, upstash, LEASE_S=900)
    first = start_worker(env, "--worker-id", "leaving")
    await asyncio.to_thread(wait_rows, pg, "term-worker", 8, first)
    t0 = time.monotonic()
    os.kill(first.pid, signal.SIGTERM)  # as `docker stop` or a platform's scale-down does: the main process
    while (await q.stats())["queued_default"] == 0:
        assert time.monotonic() - t0 < 60, "the job was not handed back"
        await asyncio.sleep(0.05)
    released_in = time.monotonic() - t0
    out1, _ = await asyncio.to_thread(first.communicate, timeout=120)
    stopped_in = time.monotonic() - t0
    assert first.returncode == 0, out1[-3000:]
    assert "handed back" in out1
    stats = await q.stats()
    assert (stats["queued_default"], stats["running"]) == (1, 0)
    assert pg.query("select status::text from jobs where id = 'term-worker'") == [("queued",)]
    before = rows(pg, "term-worker")

    second = start_worker(env, "--drain", "--worker-id", "next")
    out2, _ = await asyncio.to_thread(second.communicate, timeout=600)
    assert second.returncode == 0, out2[-3000:]
    assert "job=term-worker worker=next attempt=1" in out2  # the hand-back used no attempt
    after = rows(pg, "term-worker")
    assert len(after) == 64 and {k: after[k] for k in before} == before
    counters_match(pg, "term-worker")
    print(f"\nSIGTERM: the job was back on the queue {released_in:.2f} s after the signal and the worker exited "
          f"after {stopped_in:.1f} s (engine shutdown included), with {len(before)}/64 stored; "
          f"the next worker took it at once and finished: rows={len(after)}")
    await q.close()


class Dying:
    """The real engine, except that this job's engine work raises every time."""

    def __init__(self, engine):
        self.engine = engine
        self.model_name, self.served_models, self.capacity = engine.model_name, engine.served_models, engine.capacity

    @property
    def alive(self) -> bool:
        return self.engine.alive

    async def complete(self, request):
        await self.engine.complete(request)
        raise EngineDeadError("CUDA error: an illegal memory access was encountered")


async def test_a_job_whose_engine_work_always_raises_ends_in_dead_letter(engine, pg, upstash, redis_server):
    redis_server.flush()
    q = make_queue(upstash, max_attempts=3)
    store = PostgresStore(pg.url, timeout_s=5)
    await q.enqueue(staggered(4, "poison-real"))
    stats = await Worker(Dying(engine), q, store, drain=True, lease_s=30, poll_min_s=0.05, poll_max_s=0.3).run()
    assert (stats.failed, stats.dead_lettered) == (3, 1)
    (dead,) = await q.dead()
    assert dead["id"] == "poison-real" and dead["attempts"] == "3" and "illegal memory access" in dead["last_error"]
    ((status, error),) = pg.query("select status::text, error from jobs where id = 'poison-real'")
    assert status == JobStatus.failed.value and "illegal memory access" in error
    assert engine.alive
    await store.close()
    await q.close()
