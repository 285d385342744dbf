"""modal_app.py offline: its declared config, its methods run locally on the real CPU engine, its web
app, and its Cron's queue check. MODAL_CONFIG_PATH points at an empty file (tests/conftest.py), so
nothing here can reach Modal; deploying is the one part that cannot run here."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import modal_app
from handler.platforms.modal import queued_jobs
from handler.service import JobService
from shared.contracts.errors import ConfigError, JobFailed
from shared.contracts.models import Job
from shared.contracts.settings import Settings
from shared.stores.sqlite import SQLiteStore
from tests.conftest import UPSTASH_TOKEN, make_queue
from tests.fakes import FakeEngine, RecordingDispatcher
from tests.integration.conftest import engine_settings
from tests.integration.test_runpod import job_input

ROOT = Path(__file__).resolve().parents[2]


def test_imports_with_no_deprecation_warnings():
    proc = subprocess.run([sys.executable, "-W", "error", "-c", "import modal_app"], cwd=ROOT, env=os.environ,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_gpu_class_config_through_info():
    info = modal_app.LLMJobs._get_class_service_function().info()
    assert info.gpus == [("L40S", 1), ("A100-80GB", 1)] and modal_app.GPU == ["L40S", "A100-80GB"]
    assert info.timeout == modal_app.JOB_TIMEOUT_S == 24 * 3600
    assert info.startup_timeout == modal_app.STARTUP_TIMEOUT_S >= 10 * 60
    assert info.max_retries == modal_app.RUN_RETRIES >= 1
    assert info.concurrency_info.max_inputs == modal_app.JOBS_PER_CONTAINER > 1
    assert {path: v.name for path, v in info.volumes.items()} == {
        "/root/.cache/huggingface": "llm-jobs-hf-cache", "/root/.cache/vllm": "llm-jobs-vllm-cache",
        "/root/adapters": "llm-jobs-adapters",  # LoRA adapters, served when ADAPTERS_DIR names it
        "/root/training": "llm-jobs-training"}  # trained adapters, read-only (tests/dispatch/test_modal_training.py)
    assert all(any(name in s for s in info.secrets) for name in modal_app.SECRET_NAMES)
    assert set(info.method_names) == {"stream", "run", "drain"}
    assert modal_app.SCALEDOWN_WINDOW_S >= 60


def test_schedule_web_app_and_image_env():
    assert modal_app.drain_queue.info().schedule.startswith("Cron('*/5 * * * *'")
    assert modal_app.drain_queue.info().gpus == []  # the Cron only looks at the queue
    web = modal_app.web.info()
    assert web.web_info is not None and web.web_info.unauthenticated is True  # the API checks its own keys
    assert web.concurrency_info.max_inputs == modal_app.WEB_MAX_INPUTS
    # every variable the image sets is a Settings field, and the caches sit on the volumes
    fields = {name.upper() for name in Settings.model_fields}
    assert set(modal_app.IMAGE_ENV) <= fields
    assert modal_app.IMAGE_ENV["HF_HOME"] in modal_app.VOLUMES
    assert modal_app.IMAGE_ENV["VLLM_CACHE_ROOT"] in modal_app.VOLUMES
    assert modal_app.VLLM_VERSION == "0.32.0"


# ## The class's methods, locally


@pytest.fixture
async def local_service(engine, tmp_path, upstash, redis_server):
    redis_server.flush()
    settings = engine_settings(upstash_redis_rest_url=upstash.url, upstash_redis_rest_token=UPSTASH_TOKEN,
                               default_chunk_interval_s=30, jobs_per_worker=2)
    service = JobService(engine, settings, store=SQLiteStore(tmp_path / "jobs.db"))
    JobService.adopt(service)  # what @modal.enter() would have booted
    yield service
    JobService.adopt(None)
    await service.close()


async def test_run_local_returns_the_final_event_and_stores_everything(local_service):
    final = await modal_app.LLMJobs().run.local({**job_input(6), "id": "modal-run"})
    assert final["type"] == "final" and final["outcome"] == "completed" and final["summary"]["completed"] == 6
    assert len(await local_service.store.results("modal-run")) == 6

    bad = await modal_app.LLMJobs().run.local({**job_input(2), "sampling": {"top_p": 0}})
    # returned, not raised: a retry could not help
    assert bad["type"] == "final" and bad["outcome"] == "failed" and "sampling.top_p" in bad["summary"]["reason"]


async def test_stream_yields_chunks_as_stored(local_service):
    # Modal 1.6's `.local()` cannot run async generator methods (it awaits them), so this calls the
    # method on the user class, as a container does.
    obj = modal_app.LLMJobs._get_user_cls()()
    events = [e async for e in obj.stream({**job_input(5, chunk_size=2), "id": "modal-stream"})]
    assert [e["type"] for e in events] == ["chunk", "chunk", "chunk", "final"]
    assert len(await local_service.store.results("modal-stream")) == 5


async def test_drain_local_runs_the_queue_dry_on_the_engine(local_service, upstash):
    q = make_queue(upstash)
    for name in ("q1", "q2"):
        await q.enqueue(Job.model_validate({**job_input(3), "id": name}))
    assert await queued_jobs(local_service.settings) == 2
    stats = await modal_app.LLMJobs().drain.local()
    assert stats["done"] == 2 and stats["failed"] == 0
    assert await queued_jobs(local_service.settings) == 0
    for name in ("q1", "q2"):
        assert len(await local_service.store.results(name)) == 3
    await q.close()


async def test_run_raises_when_the_job_fails_so_modal_retries(tmp_path):
    service = JobService(FakeEngine(die_on="c1"), engine_settings(), store=SQLiteStore(tmp_path / "f.db"))
    JobService.adopt(service)
    try:
        job = {"items": [{"custom_id": f"c{i}", "prompt": "x"} for i in range(3)], "model": "fake-model"}
        with pytest.raises(JobFailed, match="fake engine died"):
            await modal_app.LLMJobs().run.local(job)
    finally:
        JobService.adopt(None)
        await service.close()


# ## The web app: the HTTP API with DISPATCHER=modal


@pytest.fixture
def api_env(monkeypatch, tmp_path):
    from shared.contracts.settings import get_settings

    monkeypatch.setenv("API_KEYS", "modal-key")
    monkeypatch.setenv("SQLITE_PATH", str(tmp_path / "jobs.db"))
    monkeypatch.setenv("RATE_LIMIT_PER_MINUTE", "0")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_web_app_is_the_api_and_refuses_to_run_open(api_env, monkeypatch):
    from shared.contracts.settings import get_settings

    recorder = RecordingDispatcher()
    with TestClient(modal_app.web_app(recorder)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.post("/v1/jobs", json=job_input(1)).status_code == 401
        auth = {"Authorization": "Bearer modal-key"}
        r = client.post("/v1/jobs", json={**job_input(1), "chunk_size": -1}, headers=auth)
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "chunk_size"
        assert recorder.jobs == []
        r = client.post("/v1/jobs", json=job_input(2), headers=auth)
        assert r.status_code == 202 and recorder.jobs == [r.json()["id"]]
    monkeypatch.delenv("API_KEYS")
    get_settings.cache_clear()
    with pytest.raises(ConfigError, match="API_KEYS"):
        modal_app.web_app(recorder)


async def test_web_app_spawns_and_streams_from_the_store(api_env, local_service, tmp_path):
    class LocalSpawn(RecordingDispatcher):
        """Runs `LLMJobs.run` locally where Modal would spawn it."""

        events = None

        async def submit(self, refs):
            self.jobs.extend(asyncio.create_task(modal_app.LLMJobs().run.local(ref.wire())) for ref in refs)

    app = modal_app.web_app(LocalSpawn())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://modal.test",
                                 headers={"Authorization": "Bearer modal-key"}) as client:
        r = await client.post("/v1/jobs", json={**job_input(4), "id": "modal-web"})
        assert r.status_code == 202
        events = []
        async with client.stream("GET", "/v1/jobs/modal-web/events") as s:
            async for line in s.aiter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                    if events[-1]["type"] == "final":
                        break
        assert events[-1]["outcome"] == "completed"  # progress events from the store, then final
        assert {e["type"] for e in events} <= {"progress", "final"}
        page = (await client.get("/v1/jobs/modal-web/results")).json()
        assert len(page["data"]) == 4


async def test_cron_skips_the_gpu_when_the_queue_is_empty(local_service, monkeypatch, tmp_path):
    from shared.contracts.settings import get_settings

    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", local_service.settings.upstash_redis_rest_url)
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", UPSTASH_TOKEN)
    monkeypatch.setenv("SQLITE_PATH", str(tmp_path / "cron.db"))  # the scheduler's store: no schedules in it
    get_settings.cache_clear()
    try:
        assert await modal_app.drain_queue.local() == {"scheduled": 0, "queued": 0, "drained": False}
    finally:
        get_settings.cache_clear()
