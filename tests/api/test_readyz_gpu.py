"""/readyz names the GPU the local engine runs on (its name and memory), one entry a GPU where there are
several, and nothing on a CPU; the grading service's /health says whether there is one. torch.cuda is
monkeypatched to stand for an H100 (the local dispatcher, the fake engine, SQLite)."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest

from handler.service import JobService
from shared.contracts.settings import Settings
from shared.server.api import create_app
from shared.server.dispatch import LocalDispatcher
from shared.stores.sqlite import SQLiteStore
from tests.fakes import FakeEngine

H100 = "NVIDIA H100 80GB HBM3"


def fake_gpus(monkeypatch, names: list[str], gib: int = 80) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(names))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(names))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: names[i or 0])
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=None: SimpleNamespace(
        name=names[i or 0], total_memory=gib * 2**30))


async def readyz(tmp_path) -> tuple[dict, dict]:
    """/readyz's checks and /health, on a server with no credentials configured (details shown)."""
    settings = Settings(_env_file=None, rate_limit_per_minute=0, readyz_cache_s=0)
    store = SQLiteStore(tmp_path / "jobs.db")
    dispatcher = LocalDispatcher(settings, store, JobService(FakeEngine(), settings, store=store))
    app = create_app(settings, store=store, dispatcher=dispatcher)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
        ready, health = await client.get("/readyz"), await client.get("/health")
    await store.close()
    assert ready.status_code == 200 and health.status_code == 200
    return ready.json()["checks"], health.json()


async def test_readyz_names_the_gpu_and_its_memory(tmp_path, monkeypatch):
    fake_gpus(monkeypatch, [H100])
    checks, health = await readyz(tmp_path)
    assert checks["engine"] == "fake-model" and checks["gpu"] == {"name": H100, "memory_gib": 80.0}
    assert health["gpu_available"] is True


async def test_readyz_lists_each_gpu_where_there_are_several(tmp_path, monkeypatch):
    fake_gpus(monkeypatch, [H100, H100])
    checks, _ = await readyz(tmp_path)
    assert checks["gpu"] == [{"name": H100, "memory_gib": 80.0}] * 2


async def test_readyz_says_nothing_of_a_gpu_on_a_cpu(tmp_path, monkeypatch):
    fake_gpus(monkeypatch, [])
    checks, health = await readyz(tmp_path)
    assert "gpu" not in checks and checks["engine"] == "fake-model"
    assert health["gpu_available"] is False  # the local engine's, on a CPU
