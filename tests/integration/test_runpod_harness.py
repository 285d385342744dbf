"""`llm-jobs serve-runpod`'s app over real HTTP (uvicorn on loopback), running the real handler
on the real CPU engine: RunPod's /run, /stream, /status, /cancel, /runsync and /health."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from handler.platforms.runpod import RunpodHandler
from handler.platforms.runpod_harness import RunpodHarness, create_harness_app
from handler.service import JobService
from shared.contracts.models import JobStatus
from shared.stores.sqlite import SQLiteStore
from testkit.serve import LoopServer
from tests.integration.conftest import engine_settings
from tests.integration.test_runpod import job_input


@pytest.fixture
async def harness(engine, tmp_path):
    service = JobService(engine, engine_settings(jobs_per_worker=2, default_chunk_interval_s=30),
                         store=SQLiteStore(tmp_path / "jobs.db"))
    handler = RunpodHandler(service)
    async with LoopServer(create_harness_app(handler.handle, concurrency_modifier=handler.concurrency)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            client.service = service
            yield client
    await service.close()


async def follow(client: httpx.AsyncClient, job_id: str, prefix: str = "") -> list[tuple[str, list]]:
    """Every /stream answer until the job ends: (status, outputs)."""
    answers = []
    for _ in range(600):
        body = (await client.get(f"{prefix}/stream/{job_id}")).json()
        answers.append((body["status"], [s["output"] for s in body["stream"]]))
        if body["status"] in {"COMPLETED", "FAILED", "CANCELLED"}:
            return answers
    raise AssertionError("the job did not end")


async def test_chunks_are_on_stream_before_the_job_ends(harness):
    r = await harness.post("/run", json={"input": {**job_input(24, chunk_size=3), "id": "h-stream"}})
    assert r.status_code == 200 and r.json()["status"] == "IN_QUEUE"
    run_id = r.json()["id"]
    answers = await follow(harness, run_id)
    first = next(status for status, outs in answers if outs)
    assert first == "IN_PROGRESS"  # a chunk was readable while the job was still running
    events = [e for _, outs in answers for e in outs]
    assert [e["type"] for e in events] == ["chunk"] * 8 + ["final"]
    assert sum(len(e["results"]) for e in events[:-1]) == 24 and events[-1]["outcome"] == "completed"

    status = (await harness.get(f"/status/{run_id}")).json()
    assert status["status"] == "COMPLETED" and status["output"] == events  # the aggregate, in order
    assert status["executionTime"] > 0
    # the same contract under RunPod's URL shape
    assert (await harness.get(f"/v2/my-endpoint/status/{run_id}")).json()["status"] == "COMPLETED"
    stored = await harness.service.store.results("h-stream")
    assert len(stored) == 24


async def test_cancel_stops_the_job(harness):
    job = {**job_input(64, chunk_size=2), "id": "h-cancel", "sampling": {"max_tokens": 64}}
    run_id = (await harness.post("/v2/ep/run", json={"input": job})).json()["id"]
    for _ in range(300):
        body = (await harness.get(f"/stream/{run_id}")).json()
        if body["stream"]:
            break
    assert body["status"] == "IN_PROGRESS"
    r = await harness.post(f"/cancel/{run_id}")
    assert r.json() == {"id": run_id, "status": "CANCELLED"}
    assert (await harness.get(f"/status/{run_id}")).json()["status"] == "CANCELLED"
    record = await harness.service.store.get_job("h-cancel")
    assert record.status == JobStatus.cancelled and record.completed + record.failed < 64
    for _ in range(50):  # requests in flight were aborted inside the engine
        if harness.service.engine.in_flight == 0:
            break
        await asyncio.sleep(0.1)
    assert harness.service.engine.in_flight == 0


async def test_runsync_invalid_input_health_and_errors(harness):
    r = await harness.post("/runsync", json={"input": job_input(3)})
    body = r.json()
    assert body["status"] == "COMPLETED" and body["output"][-1]["outcome"] == "completed"

    # a bad item is an error result and the job completes; bad job-level input fails the job
    partly = await harness.post("/runsync", json={"input": {"items": [{"custom_id": "a"}, {"prompt": "hi"}],
                                                           "sampling": {"max_tokens": 8}}})
    results = [r for e in partly.json()["output"] if e["type"] == "chunk" for r in e["results"]]
    assert partly.json()["status"] == "COMPLETED" and {r["status"] for r in results} == {"ok", "error"}
    bad = await harness.post("/runsync", json={"input": {**job_input(2), "chunk_size": 0}})
    assert bad.json()["status"] == "FAILED" and "chunk_size" in bad.json()["error"]

    health = (await harness.get("/health")).json()
    assert health["jobs"]["completed"] >= 1 and health["jobs"]["failed"] >= 1
    assert health["workers"]["idle"] + health["workers"]["running"] == 2

    assert (await harness.get("/status/nope")).status_code == 404
    assert (await harness.post("/run", json={"prompt": "no input wrapper"})).status_code == 400


def test_concurrency_modifier_must_give_an_int():
    async def handler(job):
        yield job

    with pytest.raises(ValueError, match="int"):
        RunpodHarness(handler, concurrency_modifier=lambda n: 2.5)
    assert RunpodHarness(handler, concurrency_modifier=lambda n: 3).concurrency == 3
