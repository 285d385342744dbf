"""Eval suites, runs and schedules through the API and the SDK (issue 14): owner-scoped like jobs, a run
scored by whoever runs its job and compared with its baseline, history a page at a time.

The API runs under uvicorn on loopback with the SQLite store and the local dispatcher on the fake engine
(tests/api/test_owners.py `serve`); owners are store keys and Supabase access tokens.
"""

from __future__ import annotations

import time

import httpx
import pytest

from shared.contracts.errors import InputError, NotFound
from shared.contracts.owners import prefix
from shared.sdk import AsyncClient, Client
from tests.api.test_owners import ADMIN, USER_A, serve, token
from tests.fakes import FakeEngine

SUITE = """\
id: capitals
assert:
  - {type: latency_ms, threshold: 60000}
cases:
""" + "".join(f"""\
  - id: q{i:02d}
    prompt: "Capital number {i}?"
    expected: "Paris"
    assert:
      - {{type: icontains, value: paris}}
""" for i in range(6))

#: the cases the fake engine answers wrongly (changed by a test between runs)
WRONG: set[str] = set()


@pytest.fixture
def api(tmp_path):
    WRONG.clear()
    engine = FakeEngine(text=lambda r: "Rome" if r.custom_id in WRONG else "Paris")
    with serve(tmp_path, engine) as api:
        yield api


def put_suite(client: httpx.Client, text: str = SUITE) -> httpx.Response:
    return client.post("/v1/evals/suites", content=text.encode(), headers={"Content-Type": "application/yaml"})


def wait_run(client: httpx.Client, run_id: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        view = client.get(f"/v1/evals/runs/{run_id}").json()
        if view["status"] in ("completed", "failed", "cancelled"):
            return view
        time.sleep(0.05)
    raise AssertionError(f"eval run {run_id} did not end")


def test_a_suite_is_stored_once_per_version_and_only_its_owner_sees_it(api):
    with api.as_(api.alice) as alice, api.as_(api.bob) as bob:
        first = put_suite(alice)
        assert first.status_code == 201, first.text
        body = first.json()
        assert (body["id"], body["store_id"], body["cases"], body["created"]) == (
            "capitals", prefix("alice") + "capitals", 6, True)
        again = put_suite(alice)
        assert again.status_code == 200 and again.json()["created"] is False
        assert again.json()["version"] == body["version"]
        changed = put_suite(alice, SUITE.replace("Capital number", "Capital city number"))
        assert changed.status_code == 201 and changed.json()["version"] != body["version"]
        assert alice.get("/v1/evals/suites/capitals").json()["version"] == changed.json()["version"]
        assert bob.get("/v1/evals/suites/capitals").status_code == 404
        assert bob.get("/v1/evals/suites/capitals/history").status_code == 404
        # bob's suite of the same name is his own
        assert put_suite(bob).json()["store_id"] == prefix("bob") + "capitals"


def test_an_invalid_suite_is_a_422_naming_the_case_field_and_line(api):
    bad = SUITE.replace("id: q01", "id: q00").replace("{type: icontains, value: paris}", "{type: icontains}", 1)
    with api.as_(api.alice) as alice:
        r = put_suite(alice, bad)
        assert r.status_code == 422
        issues = {(i["field"], i["line"]) for i in r.json()["detail"]}
        assert ("cases.1.id", 10) in issues
        assert any(f.startswith("cases.0.assert.0") and line == 9 for f, line in issues), issues
        not_utf8 = alice.post("/v1/evals/suites", content=b"id: x\ncases: [\xff]\n",
                              headers={"Content-Type": "application/yaml"})
        assert not_utf8.status_code == 422 and "UTF-8" in not_utf8.text
        assert alice.get("/v1/evals/suites/capitals").status_code == 404  # nothing was stored


def test_a_run_is_scored_compared_with_its_baseline_and_listed_in_history(api):
    with api.as_(api.alice) as alice, api.as_(api.bob) as bob:
        put_suite(alice)
        r = alice.post("/v1/evals/runs", json={"suite": "capitals", "id": "r1"})
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert accepted["store_id"] == prefix("alice") + "r1" and accepted["total"] == 6
        assert accepted["events_url"] == "/v1/jobs/r1/events"
        first = wait_run(alice, "r1")
        assert first["status"] == "completed" and first["scores"]["pass_rate"] == 1.0
        assert (first["completed"], first["total"]) == (6, 6) and first["regressions"] is None
        # the same id again: the run that has it, nothing new
        assert alice.post("/v1/evals/runs", json={"suite": "capitals", "id": "r1"}).status_code == 200
        # the run is a job: its results are the job's
        assert len(alice.get("/v1/jobs/r1/results").json()["data"]) == 6

        WRONG.update({"q02", "q04"})
        assert alice.post("/v1/evals/runs", json={"suite": "capitals", "id": "r2", "baseline": "last",
                                                  "git_rev": "abc123"}).status_code == 202
        second = wait_run(alice, "r2")
        assert second["baseline"] == "r1" and second["git_rev"] == "abc123"
        assert second["regressed"] is True and second["regressions"]["cases"] == ["q02", "q04"]
        assert second["scores"]["metrics"]["icontains"]["pass_rate"] == pytest.approx(4 / 6)
        cases = alice.get("/v1/evals/runs/r2/cases", params={"limit": 4}).json()
        assert [c["case_id"] for c in cases["data"]] == ["q00", "q01", "q02", "q03"] and cases["next_after"] == "q03"
        assert [c["passed"] for c in cases["data"]] == [True, True, False, True]
        assert cases["data"][2]["output"] == "Rome"

        page = alice.get("/v1/evals/suites/capitals/history", params={"limit": 1}).json()
        assert [v["id"] for v in page["data"]] == ["r2"] and page["next_before"] == "r2"
        older = alice.get("/v1/evals/suites/capitals/history", params={"before": "r2"}).json()
        assert [v["id"] for v in older["data"]] == ["r1"] and older["next_before"] is None

        report = alice.get("/v1/evals/runs/r2/report")
        assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in report.headers["content-security-policy"]
        assert "r2" in report.text and "q02" in report.text and "Rome" in report.text
        assert bob.get("/v1/evals/runs/r2/report").status_code == 404

        assert bob.get("/v1/evals/runs/r1").status_code == 404
        assert bob.get("/v1/evals/runs/r1/cases").status_code == 404
        missing = bob.post("/v1/evals/runs", json={"suite": "capitals"})
        assert missing.status_code == 422 and missing.json()["detail"][0]["field"] == "suite"
        not_json = alice.post("/v1/evals/runs", content=b"\xff{", headers={"Content-Type": "application/json"})
        assert not_json.status_code == 422
        huge = alice.post("/v1/evals/runs", json={"suite": "capitals", "git_rev": "x" * 100_000})
        assert huge.status_code == 413
        unknown_base = alice.post("/v1/evals/runs", json={"suite": "capitals", "baseline": "nope"})
        assert unknown_base.status_code == 422 and unknown_base.json()["detail"][0]["field"] == "baseline"
    with api.as_(ADMIN) as admin:  # an admin sees the stored ids, and may run an owner's suite as theirs
        stored = prefix("alice") + "r2"
        assert admin.get(f"/v1/evals/runs/{stored}").json()["owner"] == "alice"
        made = admin.post("/v1/evals/runs", json={"suite": prefix("alice") + "capitals", "id": "r3"}).json()
        assert made["store_id"] == prefix("alice") + "r3" and made["owner"] == "alice"


def test_schedules_are_owner_scoped_checked_and_idempotent(api):
    with api.as_(api.alice) as alice, api.as_(token(USER_A)) as user_a:
        put_suite(alice)
        nightly = {"id": "nightly", "suite": "capitals", "cron": "0 3 * * *"}
        made = alice.post("/v1/schedules", json=nightly)
        assert made.status_code == 201, made.text
        assert made.json()["store_id"] == prefix("alice") + "nightly"
        assert made.json()["suite"] == "capitals"
        assert alice.post("/v1/schedules", json=nightly).status_code == 200
        assert alice.post("/v1/schedules", json={**nightly, "cron": "0 4 * * *"}).status_code == 409
        bad = alice.post("/v1/schedules", json={**nightly, "id": "x", "cron": "61 * * * *"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "cron"
        assert user_a.post("/v1/schedules", json=nightly).json()["detail"][0]["field"] == "suite"
        assert [s["id"] for s in alice.get("/v1/schedules").json()["data"]] == ["nightly"]
        assert user_a.get("/v1/schedules").json()["data"] == []
        assert user_a.delete("/v1/schedules/nightly").status_code == 404
        with api.as_(ADMIN) as admin:
            assert [s["store_id"] for s in admin.get("/v1/schedules").json()["data"]] == [prefix("alice") + "nightly"]
        assert alice.delete("/v1/schedules/nightly").status_code == 204
        assert alice.get("/v1/schedules").json()["data"] == []


async def test_the_async_sdk_runs_a_suite_file_and_waits_for_its_scores(api, tmp_path):
    path = tmp_path / "capitals.yaml"
    path.write_text(SUITE)
    async with AsyncClient("http", base_url=api.url, api_key=api.alice) as client:
        run = await client.evals.run(path)
        assert run.id.startswith("capitals-")
        view = await run.wait(timeout=30)
        assert view["status"] == "completed" and view["scores"]["passed"] == 6
        assert [c["case_id"] async for c in run.cases(page_size=4)] == [f"q{i:02d}" for i in range(6)]
        assert [r.custom_id async for r in run.job.results()] == [f"q{i:02d}" for i in range(6)]
        WRONG.add("q01")
        again = await client.evals.run("capitals", baseline="last")  # the stored suite, by its id
        assert (await again.wait(timeout=30))["regressions"]["cases"] == ["q01"]
        history = await client.evals.history("capitals")
        assert [v["id"] for v in history["data"]] == [again.id, run.id]
        await client.schedules.add("nightly", suite="capitals", cron="0 3 * * *")
        assert [s["cron"] for s in await client.schedules.list()] == ["0 3 * * *"]
        await client.schedules.remove("nightly")
        assert await client.schedules.list() == []
        with pytest.raises(NotFound):
            await client.evals.get_run("nope")
        path.write_text(SUITE.replace("id: q01", "id: q00"))
        with pytest.raises(InputError) as e:  # checked here, before anything is sent
            await client.evals.run(path)
        assert e.value.issues[0].field == "cases.1.id" and e.value.issues[0].line == 10


def test_the_blocking_sdk_mirrors_it(api, tmp_path):
    path = tmp_path / "capitals.json"
    path.write_text('{"id": "capitals", "cases": [{"id": "a", "prompt": "Capital?", "assert": '
                    '[{"type": "equals", "value": "Paris"}]}]}')
    with Client("http", base_url=api.url, api_key=api.bob) as client:
        run = client.evals.run(str(path), id="mine")
        assert run.id == "mine" and run.wait(timeout=30)["scores"]["pass_rate"] == 1.0
        assert [c["output"] for c in client.evals.cases("mine")] == ["Paris"]
        assert client.evals.history("capitals")["data"][0]["id"] == "mine"
        assert client.evals.get_suite("capitals")["cases"] == 1


def test_evals_need_the_http_backend(tmp_path):
    from shared.contracts.errors import ConfigError
    from shared.contracts.settings import Settings

    client = AsyncClient("local", settings=Settings(_env_file=None, sqlite_path=tmp_path / "jobs.db"))
    with pytest.raises(ConfigError, match="http backend"):
        client.evals  # noqa: B018
