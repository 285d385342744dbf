"""What a deployment serves, through the API, the SDK and the CLI (issue 15): `GET /v1/models` and /readyz list
the model and the LoRA adapters over it (the store's made for it, and the engine's ADAPTERS_DIR), jobs name
them, and `llm-jobs adapters add | list | rm` keeps the store's list (uvicorn, SQLite, the local dispatcher
on the fake engine)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from shared.contracts.adapters import AdapterRecord
from shared.contracts.settings import Settings
from shared.sdk import AsyncClient, Client
from shared.server.api import create_app
from shared.stores.sqlite import SQLiteStore
from testkit.serve import ThreadedServer
from tests.api.test_owners import ADMIN, serve, submit, wait_ended
from tests.fakes import FakeEngine, RecordingDispatcher
from tests.unit.test_adapters import adapter_dir


def stock(db: Path) -> None:
    async def put() -> None:
        store = SQLiteStore(db)
        await store.put_adapter(AdapterRecord(name="grader", base_model="org/fake-model", path="/vol/grader"))
        await store.put_adapter(AdapterRecord(name="llama-lora", base_model="org/Llama-3.1-8B", path="/vol/llama"))
        await store.put_adapter(AdapterRecord(name="unsaid", path="/vol/unsaid"))  # a base not said: fits any
        await store.close()

    asyncio.run(put())


def ids(listed: list[dict]) -> list[tuple[str, str | None]]:
    return [(m["id"], m["parent"]) for m in listed]


SERVED = [("fake-model", None), ("grader", "fake-model"), ("local", "fake-model"), ("unsaid", "fake-model")]


def test_models_readyz_and_the_sdk_list_the_model_and_its_adapters(tmp_path):
    engine = FakeEngine(lora=True, found_adapters={"local": adapter_dir(tmp_path, "local")},
                        text=lambda r: f"{r.adapter or 'base'} says hi")
    with serve(tmp_path, engine, served_model_name="fake-model", readyz_cache_s=0) as api, \
            api.as_(api.alice) as alice, api.as_(ADMIN) as admin:
        stock(tmp_path / "jobs.db")
        listed = alice.get("/v1/models")
        assert listed.status_code == 200 and listed.json()["object"] == "list"
        assert ids(listed.json()["data"]) == SERVED  # llama-lora is for another base
        assert api.http.get("/v1/models").status_code == 401
        ready = admin.get("/readyz").json()["checks"]
        assert ready["models"] == ["fake-model"] and ready["adapters"] == ["grader", "local", "unsaid"]
        assert "models" not in (alice.get("/readyz").json().get("checks") or {})  # owners see yes or no

        with Client("http", base_url=api.url, api_key=api.alice) as client:
            assert ids(client.models()) == SERVED
        with Client("local", settings=api.settings, store=SQLiteStore(tmp_path / "jobs.db"),
                    service=_service(engine, api)) as local:
            assert ids(local.models()) == SERVED

        body = {"id": "mix", "adapter": "grader", "items": [{"custom_id": "a", "prompt": "hi"},
                                                            {"custom_id": "b", "prompt": "hi", "adapter": "local"}]}
        submit(alice, body)
        assert wait_ended(alice, "mix")["status"] == "completed"
        texts = {r["custom_id"]: r["text"] for r in alice.get("/v1/jobs/mix/results").json()["data"]}
        assert texts == {"a": "grader says hi", "b": "local says hi"}
        submit(alice, {"id": "bad", "items": [{"custom_id": "a", "prompt": "hi", "adapter": "nowhere"}]})
        view = wait_ended(alice, "bad")
        assert view["status"] == "failed" and "adapter 'nowhere': no adapter of that name" in view["error"]
        bad_name = alice.post("/v1/jobs", json={"items": [{"custom_id": "a", "prompt": "hi", "adapter": "a b"}]})
        assert bad_name.status_code == 422


def _service(engine: FakeEngine, api):
    from handler.service import JobService

    return JobService(engine, api.settings, store=SQLiteStore(api.store.path))


async def test_without_an_engine_here_the_store_lists_the_configured_models_adapters(tmp_path):
    await asyncio.to_thread(stock, tmp_path / "jobs.db")
    store = SQLiteStore(tmp_path / "jobs.db")
    settings = Settings(_env_file=None, api_keys=ADMIN, rate_limit_per_minute=0, model_name="org/fake-model")
    server = ThreadedServer(create_app(settings, store=store, dispatcher=RecordingDispatcher())).start()
    try:
        async with AsyncClient("http", base_url=server.url, api_key=ADMIN) as client:
            assert ids(await client.models()) == [("org/fake-model", None), ("grader", "org/fake-model"),
                                                  ("unsaid", "org/fake-model")]
    finally:
        server.stop()


def llm_jobs(db: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SQLITE_PATH": str(db), "SUPABASE_URL": "", "DATABASE_URL": "", "COLUMNS": "200",
           "ADAPTERS_DIR": "", **env}
    return subprocess.run([sys.executable, "-m", "shared.cli", "adapters", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_the_cli_adds_lists_and_removes_adapters(tmp_path):
    db = tmp_path / "jobs.db"
    made = adapter_dir(tmp_path / "adapters", "grader", base="org/Base-1B", r=16)
    added = llm_jobs(db, "add", "grader", str(made))
    assert added.returncode == 0, added.stderr
    assert "grader" in added.stderr and "org/Base-1B" in added.stderr and "rank 16" in added.stderr
    assert llm_jobs(db, "add", "other", str(made), "--base", "org/Other").returncode == 0
    volume = llm_jobs(db, "add", "remote", "/runpod-volume/adapters/remote", "--no-check", "--base", "org/B")
    assert volume.returncode == 0, volume.stderr
    adapter_dir(tmp_path / "adapters", "undiscovered")
    listed = llm_jobs(db, "list", ADAPTERS_DIR=str(tmp_path / "adapters"))
    assert listed.returncode == 0, listed.stderr
    for word in ("grader", "org/Base-1B", "other", "org/Other", "/runpod-volume/adapters/remote", "undiscovered",
                 "(ADAPTERS_DIR)"):
        assert word in listed.stdout, word

    assert llm_jobs(db, "rm", "other").returncode == 0
    assert "other" not in llm_jobs(db, "list").stdout.split()
    for args, said in [(("rm", "other"), "no adapter 'other'"), (("add", "x", str(tmp_path)), "no adapter_config.json"),
                       (("add", "bad name", str(made)), "is not an adapter name"),
                       (("add", "x", str(tmp_path / "missing")), "is not a directory")]:
        refused = llm_jobs(db, *args)
        assert refused.returncode == 2 and said in refused.stderr, (args, refused.stderr)


def test_the_openapi_document_lists_models():
    from shared.server.api.app import openapi_document

    doc = openapi_document()
    assert "/v1/models" in doc["paths"] and doc["paths"]["/v1/models"]["get"].get("security")
    item = doc["components"]["schemas"]["Item"]["properties"]
    assert "adapter" in item and "adapter" in doc["components"]["schemas"]["JobIn"]["properties"]
    assert json.dumps(doc)  # serializable
