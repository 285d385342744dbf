"""Send every case of the hostile-input corpus (tests/security/corpus.py) to the real API."""

from __future__ import annotations

import httpx
import pytest

from shared.contracts.settings import Settings
from shared.server.api import create_app
from shared.stores.sqlite import SQLiteStore
from tests.fakes import RecordingDispatcher
from tests.security.corpus import CASES, Case


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_each_hostile_input_gets_its_answer(case: Case, tmp_path):
    dispatcher = RecordingDispatcher()
    app = create_app(Settings(_env_file=None, rate_limit_per_minute=0), store=SQLiteStore(tmp_path / "j.db"),
                     dispatcher=dispatcher)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test",
                                 timeout=60) as client:
        r = await client.post("/v1/jobs", content=case.body, params=case.query,
                               headers={"content-type": case.content_type})
        assert r.status_code == case.status, r.text[:500]
        if case.status == 422:
            first = r.json()["detail"][0]
            assert first["field"] == case.field, first
            if case.line is not None:
                assert first["line"] == case.line, first
            assert case.says in first["message"], first
            assert dispatcher.jobs == []  # nothing refused is dispatched
        elif case.status == 202:
            assert len(dispatcher.jobs) == 1
        assert (await client.get("/healthz")).status_code == 200
