"""What the API shows to whom: /readyz details need a key (and are cached), and errors sent to clients
never name settings, file paths or driver messages (the log has them, under the same error id)."""

from __future__ import annotations

import logging
import re

import httpx
import pytest

from shared.contracts.errors import ConfigError, QueueUnavailable, StoreError, StoreUnavailable
from shared.contracts.settings import Settings
from shared.queue.runpod import RunpodError
from shared.server.api import create_app
from shared.stores.sqlite import SQLiteStore
from tests.fakes import RecordingDispatcher

KEY = "exposure-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SECRET_TEXT = ("sqlite /srv/secret/path/jobs.db: unable to open database file; "
               "DATABASE_URL=postgresql://admin:hunter2@db.internal:5432/jobs")


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                             base_url="http://api.test", timeout=30)


class CountingDispatcher(RecordingDispatcher):
    def __init__(self) -> None:
        super().__init__()
        self.probes = 0

    async def ready(self) -> dict:
        self.probes += 1
        return {"queue": {"queued": 3, "running": 1}}


class BrokenStore(SQLiteStore):
    """A store whose every read fails with a driver message that names a path and a DSN."""

    def __init__(self, path, error: Exception):
        super().__init__(path)
        self.error = error
        self.reads = 0

    async def get_job(self, job_id):
        self.reads += 1
        raise self.error

    async def list_jobs(self, *, limit=50, status=None, owner=None, after=None):
        raise self.error


def app_with(tmp_path, store=None, dispatcher=None, **settings):
    s = Settings(_env_file=None, rate_limit_per_minute=0, **settings)
    return create_app(s, store=store or SQLiteStore(tmp_path / "jobs.db"),
                      dispatcher=dispatcher or CountingDispatcher())


# ## /readyz


async def test_readyz_without_a_key_says_yes_or_no_only(tmp_path):
    app = app_with(tmp_path, api_keys=KEY)
    async with client_for(app) as client:
        r = await client.get("/readyz")
        assert r.status_code == 200 and r.json() == {"ready": True}
        wrong = await client.get("/readyz", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 200 and wrong.json() == {"ready": True}
        keyed = await client.get("/readyz", headers=AUTH)
        assert keyed.status_code == 200
        assert keyed.json()["checks"]["store"] == "ok" and keyed.json()["checks"]["queue"] == {"queued": 3,
                                                                                                 "running": 1}


async def test_readyz_not_ready_without_a_key_is_a_bare_503(tmp_path):
    store = BrokenStore(tmp_path / "jobs.db", StoreUnavailable(SECRET_TEXT))
    app = app_with(tmp_path, store=store, api_keys=KEY, readyz_cache_s=0)
    async with client_for(app) as client:
        r = await client.get("/readyz")
        assert r.status_code == 503 and r.json() == {"ready": False}
        keyed = await client.get("/readyz", headers=AUTH)
        assert keyed.status_code == 503 and keyed.json()["ready"] is False
        # even a key holder gets no driver text: the check names the failure and an error id for the log
        assert "secret" not in keyed.text and "hunter2" not in keyed.text and "DATABASE_URL" not in keyed.text
        assert "error id" in keyed.json()["checks"]["store"]


async def test_readyz_with_no_keys_configured_shows_details(tmp_path):
    # no API_KEYS: a local-only dev server by design (`serve` refuses a public interface), details are fine
    app = app_with(tmp_path)
    async with client_for(app) as client:
        r = await client.get("/readyz")
        assert r.status_code == 200 and r.json()["checks"]["store"] == "ok"


async def test_readyz_answers_from_a_short_cache(tmp_path):
    dispatcher = CountingDispatcher()
    store = BrokenStore(tmp_path / "jobs.db", StoreUnavailable("down"))
    app = app_with(tmp_path, store=store, dispatcher=dispatcher, api_keys=KEY, readyz_cache_s=60)
    async with client_for(app) as client:
        for _ in range(20):
            assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/readyz", headers=AUTH)).status_code == 503
    assert store.reads == 1 and dispatcher.probes == 1
    app = app_with(tmp_path, store=store, dispatcher=dispatcher, api_keys=KEY, readyz_cache_s=0)
    async with client_for(app) as client:
        for _ in range(3):
            await client.get("/readyz")
    assert store.reads == 4 and dispatcher.probes == 4


# ## errors sent to clients


@pytest.mark.parametrize(("error", "status"), [
    (StoreUnavailable(SECRET_TEXT), 503),
    (StoreError(SECRET_TEXT), 503),
    (QueueUnavailable(SECRET_TEXT), 503),
    (RunpodError(SECRET_TEXT), 502),
    (ConfigError(SECRET_TEXT), 500),
])
async def test_errors_reach_the_client_generic_and_the_log_in_full(tmp_path, caplog, error, status):
    store = BrokenStore(tmp_path / "jobs.db", error)
    app = app_with(tmp_path, store=store, api_keys=KEY)
    caplog.set_level(logging.INFO)
    async with client_for(app) as client:
        for path in ("/v1/jobs/some-job", "/v1/jobs"):
            r = await client.get(path, headers=AUTH)
            assert r.status_code == status, r.text
            for leak in ("/srv/secret", "hunter2", "DATABASE_URL", "db.internal", "unable to open", "sqlite"):
                assert leak not in r.text
            body = r.json()
            assert re.fullmatch(r"[0-9a-f]{12}", body["error_id"]) and body["error_id"] in body["detail"]
            # the log has the full text under the same id
            assert any(body["error_id"] in rec.getMessage() and SECRET_TEXT in rec.getMessage()
                       for rec in caplog.records)
            if status == 503 and isinstance(error, (StoreUnavailable, QueueUnavailable)):
                assert int(r.headers["Retry-After"]) >= 1


async def test_input_errors_about_the_callers_own_input_stay_as_they_are(tmp_path):
    app = app_with(tmp_path, api_keys=KEY)
    async with client_for(app) as client:
        r = await client.post("/v1/jobs", json={"items": [{"custom_id": "a", "prompt": "x"}],
                                                "sampling": {"temperature": 7}}, headers=AUTH)
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "sampling.temperature"
        r = await client.get("/v1/jobs/no-such-job", headers=AUTH)
        assert r.status_code == 404 and "no-such-job" in r.json()["detail"]


async def test_repeated_custom_ids_in_the_sdks_rejections_are_the_callers_error_not_the_stores(tmp_path):
    # found by tests/api/test_fuzz.py: two rejections with one custom_id reached the store (a 503)
    app = app_with(tmp_path, api_keys=KEY)
    gone = {"custom_id": "", "index": 1, "message": "bad"}
    async with client_for(app) as client:
        r = await client.post("/v1/jobs", json={"items": [{"custom_id": "a", "prompt": "x"}],
                                                "rejected": [gone, {**gone, "index": 2}]}, headers=AUTH)
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "rejected.1.custom_id", r.text
        r = await client.post("/v1/jobs", json={"items": [{"custom_id": "a", "prompt": "x"}],
                                                "rejected": [{**gone, "custom_id": "a"}]}, headers=AUTH)
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "custom_id", r.text
