"""A 20,000-item job split into shards and run by three worker processes at once, on the fake engine,
the real PostgreSQL store and the real queue (upstash-redis -> the REST adapter, with Upstash's
limits -> redis-server). One worker is SIGKILLed mid-shard; another finishes its shard."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time

from shared.contracts.events import FinalEvent
from shared.contracts.models import Item, Job
from shared.contracts.settings import Settings
from shared.server.dispatch import QueueDispatcher
from shared.server.lifecycle import JobLifecycle
from shared.stores.postgres import PostgresStore
from tests.conftest import UPSTASH_TOKEN, make_queue

N, SHARD = 20_000, 1000


def start(worker_id: str, pg, upstash, **env: object) -> subprocess.Popen:
    full = {**os.environ, "DATABASE_URL": pg.url, "UPSTASH_REDIS_REST_URL": upstash.url,
            "UPSTASH_REDIS_REST_TOKEN": UPSTASH_TOKEN, **{k: str(v) for k, v in env.items()}}
    return subprocess.Popen([sys.executable, "-m", "testkit.fake_gpu", worker_id], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def stored(pg, job_id: str) -> int:
    return pg.query("select count(*) from job_results where job_id = %s", job_id)[0][0]


async def test_twenty_thousand_items_over_three_workers_one_killed(pg, upstash, redis_server):
    pg.truncate()
    redis_server.flush()
    queue = make_queue(upstash)
    store = PostgresStore(pg.url)
    settings = Settings(shard_size=SHARD, _env_file=None)
    lifecycle = JobLifecycle(store, QueueDispatcher(queue), settings)
    job = Job(id="fan-out", chunk_size=100, items=[Item(custom_id=f"c{i:05d}", prompt=f"p{i}") for i in range(N)])
    accepted = await lifecycle.submit(job)
    assert accepted.dispatched
    assert (await queue.stats())["queued_default"] == N // SHARD
    assert await store.count_items("fan-out") == N

    env = {"LEASE_S": 4, "FAKE_LATENCY_S": 0.02, "FAKE_CAPACITY": 32}
    doomed = start("doomed", pg, upstash, DRAIN=0, **env)
    deadline = time.monotonic() + 120
    while stored(pg, "fan-out") < 1500:  # it is mid-way through a shard
        assert doomed.poll() is None, doomed.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the first worker made no progress"
        await asyncio.sleep(0.05)
    others = [start(w, pg, upstash, **env) for w in ("w1", "w2")]
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed_out = doomed.communicate(timeout=30)[0]
    at_kill = stored(pg, "fan-out")
    outs = [(await asyncio.to_thread(p.communicate, timeout=600))[0] for p in others]
    for p, out in zip(others, outs, strict=True):
        assert p.returncode == 0, out[-3000:]

    # every item stored exactly once (the primary key), and the counters agree
    assert stored(pg, "fan-out") == N
    assert pg.query("select count(distinct custom_id) from job_results where job_id = 'fan-out'") == [(N,)]
    ((status, total, completed, failed),) = pg.query(
        "select status::text, total, completed, failed from jobs where id = 'fan-out'")
    assert (status, total, completed, failed) == ("completed", N, N, 0)
    # each worker ran shards; the killed worker's shard was finished by another (attempt 2)
    ran = {w: set(re.findall(r"job=fan-out#(\d+) worker=" + w + r" attempt=\d+ completed", out))
           for w, out in zip(("w1", "w2"), outs, strict=True)}
    assert ran["w1"] and ran["w2"], ran
    started = set(re.findall(r"job=fan-out#(\d+) worker=doomed attempt=1 running", doomed_out))
    finished = set(re.findall(r"job=fan-out#(\d+) worker=doomed attempt=1 completed", doomed_out))
    assert started - finished, "the first worker was killed between shards"
    rescued = started - finished
    assert all(re.search(rf"job=fan-out#{k} worker=w\d attempt=2 completed", "".join(outs)) for k in rescued)
    assert ran["w1"] | ran["w2"] | finished == {str(k) for k in range(N // SHARD)}
    # the killed worker's lease expired and was reaped, once (llm_jobs_queue_lease_expiries)
    assert await queue.stats() == {"queued_high": 0, "queued_default": 0, "queued_train": 0, "running": 0,
                                   "retrying": 0, "dead": 0, "lease_expiries": 1}
    # the job's stream ends with exactly one final event: the job's, rolled up over its shards
    events = await queue.events("fan-out", count=5000)
    finals = [e.event for e in events if isinstance(e.event, FinalEvent)]
    assert len(finals) == 1 and finals[0].outcome == "completed"
    assert (finals[0].summary.total, finals[0].summary.completed) == (N, N)
    print(f"\nfan-out: {N} items in {N // SHARD} shards; killed with {at_kill} stored; "
          f"w1 ran {len(ran['w1'])} shards, w2 {len(ran['w2'])}, doomed finished {len(finished)}")
    await lifecycle.close()
