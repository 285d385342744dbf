"""Persistence with the real engine and a real PostgreSQL: crash and resume, double delivery, outage."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from handler.runner import run_job
from shared.contracts.events import ChunkEvent
from shared.contracts.models import Item, Job, JobStatus, Sampling
from shared.stores.postgres import PostgresStore

ROOT = Path(__file__).resolve().parents[2]


def staggered(n: int, job_id: str) -> Job:
    """Items with different lengths, so results arrive over time rather than all at once."""
    items = [Item(custom_id=f"s{i:03d}", prompt=f"Count from 1 to {10 + i}, separated by commas.",
                  sampling=Sampling(max_tokens=8 + (i % 8) * 24)) for i in range(n)]
    return Job(id=job_id, items=items, sampling=Sampling(temperature=0), chunk_size=4)


def rows(pg, job_id: str) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in pg.query("select custom_id, text, latency_ms, status from job_results "
                                          "where job_id = %s", job_id)}


def counters_match(pg, job_id: str) -> None:
    ((completed, failed),) = pg.query("select completed, failed from jobs where id = %s", job_id)
    ((ok, err),) = pg.query("select count(*) filter (where status = 'ok'), count(*) filter (where status = 'error') "
                            "from job_results where job_id = %s", job_id)
    assert (completed, failed) == (ok, err)


class Counting:
    """Counts the engine work a run does."""

    def __init__(self, engine):
        self.engine, self.calls = engine, 0
        self.model_name, self.served_models, self.capacity = engine.model_name, engine.served_models, engine.capacity

    async def complete(self, request):
        self.calls += 1
        return await self.engine.complete(request)


def test_sigkill_mid_job_then_rerun_resumes_without_recomputing(pg, tmp_path):
    job = staggered(64, "crash-test")
    path = tmp_path / "job.json"
    path.write_text(job.model_dump_json(by_alias=True, exclude_none=True, exclude={"rejected"}))
    env = {**os.environ, "DATABASE_URL": pg.url, "MAX_MODEL_LEN": "2048"}
    cmd = [sys.executable, "-m", "shared.cli", "run", str(path), "--job-id", "crash-test"]

    first = subprocess.Popen([*cmd, "-o", str(tmp_path / "out1.jsonl")], env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 400
    while len(rows(pg, "crash-test")) < 12:
        assert first.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the CLI and its engine processes, mid-job
    first.wait(timeout=30)
    before = rows(pg, "crash-test")
    assert 12 <= len(before) < 64
    counters_match(pg, "crash-test")

    second = subprocess.run([*cmd, "-o", str(tmp_path / "out2.jsonl")], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert second.returncode in (0, 3), second.stderr[-3000:]
    after = rows(pg, "crash-test")
    assert len(after) == 64  # every custom_id exactly once (it is the primary key)
    assert {k: after[k] for k in before} == before  # stored rows were not recomputed
    assert f"{len(before)} result(s) already stored" in second.stderr
    # the output holds every result: the stored ones copied, the rest computed by the re-run
    written = {json.loads(x)["custom_id"]: json.loads(x) for x in (tmp_path / "out2.jsonl").read_text().splitlines()}
    assert len(written) == 64 and all(written[k]["text"] == before[k][0] for k in before)
    counters_match(pg, "crash-test")
    ((status,),) = pg.query("select status::text from jobs where id = 'crash-test'")
    assert status == "completed"
    print(f"\ncrash test: killed with {len(before)}/64 stored; the re-run computed {64 - len(before)}, "
          f"skipped {len(before)}; rows={len(after)}")


async def test_double_delivery_does_no_engine_work(engine, pg):
    store = PostgresStore(pg.url, timeout_s=5)
    job = staggered(16, "double-delivery")
    first = Counting(engine)
    events = [e async for e in run_job(job, first, store=store)]
    assert events[-1].status == JobStatus.completed and first.calls == 16
    second = Counting(engine)
    events = [e async for e in run_job(job, second, store=store)]
    assert second.calls == 0
    assert events[-1].status == JobStatus.completed and events[-1].summary.skipped == 16
    assert len(rows(pg, "double-delivery")) == 16
    counters_match(pg, "double-delivery")
    await store.close()


async def test_postgres_outage_mid_job_loses_nothing(engine, pg):
    store = PostgresStore(pg.url, timeout_s=2)
    job = staggered(48, "outage")
    outage: asyncio.Task | None = None

    async def down_then_up():
        await asyncio.to_thread(pg.stop)
        await asyncio.sleep(4)
        await asyncio.to_thread(pg.start)

    chunks = 0
    async for ev in run_job(job, engine, store=store, store_retry_s=60):
        if isinstance(ev, ChunkEvent):
            chunks += 1
            if outage is None:
                outage = asyncio.create_task(down_then_up())
    await outage
    assert ev.status == JobStatus.completed, ev.summary.reason
    assert chunks >= 12
    assert len(rows(pg, "outage")) == 48
    counters_match(pg, "outage")
    await store.close()
