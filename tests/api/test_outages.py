"""Outside services down: the API answers 503 (with Retry-After where waiting helps), never a bare 500."""

from __future__ import annotations

import httpx
import pytest

from shared.contracts.settings import Settings
from shared.server.api import create_app
from shared.stores.sqlite import SQLiteStore
from testkit.serve import free_port
from tests.fakes import RecordingDispatcher

KEY = "outage-test-key"


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                             base_url="http://api.test", timeout=30)


async def test_an_upstash_outage_makes_the_rate_limiter_answer_503_with_retry_after(tmp_path, caplog):
    # an Upstash URL where nothing listens (a stopped adapter): every call is refused
    down = f"http://127.0.0.1:{free_port()}"
    settings = Settings(_env_file=None, api_keys=KEY, upstash_redis_rest_url=down, upstash_redis_rest_token="tok",
                        rate_limit_per_minute=10, queue_timeout_s=2)
    store = SQLiteStore(tmp_path / "jobs.db")
    app = create_app(settings, store=store, dispatcher=RecordingDispatcher())
    async with client_for(app) as client:
        for method, path in [("GET", "/v1/jobs"), ("GET", "/v1/jobs/x"), ("POST", "/v1/jobs/x/cancel")]:
            r = await client.request(method, path, headers={"Authorization": f"Bearer {KEY}"})
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert int(r.headers["Retry-After"]) >= 1
            body = r.json()
            assert "rate limit" in body["detail"] and body["error_id"] in body["detail"]
            assert down not in r.text and "127.0.0.1" not in r.text  # the URL stays in the log
        # the health routes need no limiter
        assert (await client.get("/healthz")).status_code == 200
    assert down in caplog.text
    await app.state.llm_jobs.limiter.close()
    await store.close()


@pytest.mark.parametrize("where", ["directory", "missing"])
async def test_an_unopenable_sqlite_path_makes_readyz_answer_503(tmp_path, where):
    path = tmp_path if where == "directory" else tmp_path / "not-a-dir" / "jobs.db"
    if where == "missing":
        (tmp_path / "not-a-dir").write_text("a file where a directory should be")
    settings = Settings(_env_file=None, rate_limit_per_minute=0, sqlite_path=path, readyz_cache_s=0)
    app = create_app(settings, dispatcher=RecordingDispatcher())
    async with client_for(app) as client:
        r = await client.get("/readyz")
        assert r.status_code == 503, r.text
        assert r.json()["ready"] is False
        assert str(tmp_path) not in r.text
    await app.state.llm_jobs.lifecycle.store.close()
