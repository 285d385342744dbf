"""RunPod: the handler on the real CPU engine, driven by the runpod SDK's own code.

- in process, through `run_job_generator` (what the SDK wraps every generator handler in);
- `runpod_worker.py` for real, in a subprocess: the SDK's JobScaler takes jobs from a faithful
  RunPod control plane (testkit/runpod_api.py), streams outputs and posts the aggregate,
  and stops a job when RunPod signals it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from runpod.serverless.modules.rp_job import run_job_generator

import runpod_worker
from handler.platforms.runpod import RunpodHandler
from handler.service import JobService
from shared.contracts.models import JobStatus
from shared.stores.sqlite import SQLiteStore
from tests.integration.conftest import TEST_MAX_MODEL_LEN, engine_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def service(engine, tmp_path):
    store = SQLiteStore(tmp_path / "jobs.db")
    svc = JobService(engine, engine_settings(jobs_per_worker=3, default_chunk_interval_s=30), store=store)
    yield svc
    await svc.close()


def job_input(n: int, **options) -> dict:
    return {"items": [{"custom_id": f"q{i}", "prompt": f"Say the number {i}."} for i in range(n)],
            "sampling": {"max_tokens": 8, "temperature": 0}, **options}


async def drive(handler: RunpodHandler, rp_job: dict) -> list[dict]:
    return [out async for out in run_job_generator(handler.handle, rp_job)]


def test_config_is_an_async_generator_handler_with_an_int_concurrency():
    import inspect

    from tests.fakes import FakeEngine

    handler = RunpodHandler(JobService(FakeEngine(), engine_settings(jobs_per_worker=5)))
    cfg = runpod_worker.config(handler)
    assert inspect.isasyncgenfunction(cfg["handler"]) and cfg["return_aggregate_stream"] is True
    for current in (0, 1, 7, 100):
        n = cfg["concurrency_modifier"](current)
        assert type(n) is int and n == 5


async def test_chunks_then_final_and_every_result_stored(service):
    outs = await drive(RunpodHandler(service), {"id": "rp-chunks", "input": job_input(12, chunk_size=5)})
    assert all("error" not in o for o in outs)
    events = [o["output"] for o in outs]
    assert [e["type"] for e in events] == ["chunk", "chunk", "chunk", "final"]
    assert [len(e["results"]) for e in events[:3]] == [5, 5, 2]
    assert events[-1]["outcome"] == "completed" and events[-1]["job_id"] == "rp-chunks"  # RunPod's id
    stored = await service.store.results("rp-chunks")
    assert sorted(r.custom_id for r in stored) == sorted(f"q{i}" for i in range(12))


async def test_invalid_input_fails_the_job_naming_the_field(service):
    bad = job_input(2)
    bad["sampling"]["temperature"] = 9
    outs = await drive(RunpodHandler(service), {"id": "rp-bad", "input": bad})
    # one output carrying `error`: the SDK's handle_job turns it into the job's failure (FAILED)
    assert len(outs) == 1 and list(outs[0]["output"]) == ["error"]
    error = outs[0]["output"]["error"]
    assert error.startswith("invalid input:") and "sampling.temperature" in error and "Traceback" not in error
    outs = await drive(RunpodHandler(service), {"id": "rp-none", "input": "grade these"})
    assert "must be a JSON object" in outs[0]["output"]["error"]


async def test_worker_vllm_input_is_a_one_item_job_with_its_output_shape(service):
    outs = await drive(RunpodHandler(service), {"id": "rp-compat", "input": {
        "messages": [{"role": "user", "content": "Write a long story about a dragon and a knight."}],
        "sampling_params": {"temperature": 0}}})
    assert len(outs) == 1
    out = outs[0]["output"]
    assert out["choices"][0]["tokens"][0] and out["usage"]["input"] > 0
    # no max_tokens given: DEFAULT_MAX_TOKENS (512) applies, never vLLM's 16
    assert out["usage"]["output"] > 16
    stored = await service.store.results("rp-compat")
    assert stored[0].usage.completion_tokens == out["usage"]["output"]

    outs = await drive(RunpodHandler(service), {"id": "rp-compat-bad", "input": {
        "prompt": "hi", "sampling_params": {"max_tokens": 4, "top_k": 5}}})
    assert "sampling_params.top_k" in outs[0]["output"]["error"]


# ## runpod_worker.py for real


@pytest.fixture(scope="module")
def runpod_api():
    from testkit.runpod_api import FakeRunpod

    api = FakeRunpod().start()
    yield api
    api.stop()


@pytest.fixture(scope="module")
def worker_proc(runpod_api, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runpod-worker")
    env = {**os.environ, **runpod_api.env(), "SQLITE_PATH": str(tmp / "jobs.db"),
           "HEALTH_FILE": str(tmp / "health"), "MAX_MODEL_LEN": str(TEST_MAX_MODEL_LEN), "JOBS_PER_WORKER": "2",
           "DEFAULT_CHUNK_INTERVAL_S": "30", "LOG_LEVEL": "INFO"}
    for k in ("DATABASE_URL", "SUPABASE_URL", "UPSTASH_REDIS_REST_URL"):
        env.pop(k, None)
    proc = subprocess.Popen([sys.executable, "runpod_worker.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    proc.lines, proc.tmp = lines, tmp
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_worker_boots_once_then_streams_and_aggregates(runpod_api, worker_proc):
    runpod_api.submit("job-a", job_input(12, chunk_size=4))
    runpod_api.submit("job-bad", {"items": [{"custom_id": "x", "prompt": "hi"}], "chunk_size": 0})
    runpod_api.submit("job-compat", {"prompt": "Say hi.", "sampling_params": {"max_tokens": 8}})
    runpod_api.wait(lambda: {"job-a", "job-bad", "job-compat"} <= set(runpod_api.seen.done), proc=worker_proc)
    out = "".join(worker_proc.lines)
    # the engine booted before the SDK started taking jobs, and only once
    assert out.count("engine ready") == 1
    assert out.index("engine ready") < out.index("Starting Serverless Worker")
    assert (worker_proc.tmp / "health").exists()
    assert "Async Generator output" not in out  # the SDK follows LOG_LEVEL: results are not logged

    streamed = runpod_api.seen.streamed["job-a"]
    assert [e["type"] for e in streamed] == ["chunk", "chunk", "chunk", "final"]
    assert runpod_api.seen.done["job-a"] == {"output": streamed}  # the aggregate is every streamed output
    assert streamed[-1]["outcome"] == "completed" and streamed[-1]["summary"]["completed"] == 12

    bad = runpod_api.seen.done["job-bad"]
    assert "output" not in bad and "chunk_size" in bad["error"] and bad["error"].startswith("invalid input")
    assert "job-bad" not in runpod_api.seen.streamed

    compat = runpod_api.seen.done["job-compat"]["output"]
    assert len(compat) == 1 and compat[0]["choices"][0]["tokens"][0]


def test_runpod_stop_signal_cancels_the_job_and_records_it(runpod_api, worker_proc):
    runpod_api.submit("job-long", {**job_input(64, chunk_size=2), "sampling": {"max_tokens": 64}})
    runpod_api.wait(lambda: runpod_api.seen.streamed.get("job-long"), proc=worker_proc)
    runpod_api.cancel("job-long")

    async def status():
        store = SQLiteStore(worker_proc.tmp / "jobs.db")
        try:
            return await store.get_job("job-long")
        finally:
            await store.close()

    def cancelled() -> bool:
        record = asyncio.run(status())
        return record is not None and record.status == JobStatus.cancelled

    runpod_api.wait(cancelled, timeout=180, proc=worker_proc)  # a deadline, not a timing: the CI box may be loaded
    assert "job-long" not in runpod_api.seen.done  # a stopped job posts no result; RunPod reports CANCELLED
    record = asyncio.run(status())
    assert record.completed + record.failed < 64

    # the worker carries on after a cancel
    runpod_api.submit("job-after", job_input(3))
    runpod_api.wait(lambda: "job-after" in runpod_api.seen.done, proc=worker_proc)
    assert runpod_api.seen.done["job-after"]["output"][-1]["outcome"] == "completed"
