"""Named tasks through the API and the SDK: listed, named by a JSON job, a JSONL body (?task=) and the SDK,
recorded on the job, and measured apart for estimates (uvicorn, SQLite, the local dispatcher on the fake
engine, which answers with the prompt it was given)."""

from __future__ import annotations

import json

import pytest

from shared.sdk import AsyncClient
from tests.api.test_owners import ADMIN, serve, submit, wait_ended
from tests.fakes import FakeEngine

RECORD = {"curso": "2n ESO", "consigna": "Explica el cicle de l'aigua.", "respuesta": "L'aigua s'evapora i plou."}


def echo(request) -> str:
    return json.dumps({"nota": 3, "feedback": request.messages[-1]["content"][:200]})


def test_a_job_names_a_task_and_sends_only_records(tmp_path):
    with serve(tmp_path, FakeEngine(text=echo), estimate_cache_s=0, served_model_name="fake-model") as api, \
            api.as_(api.alice) as alice:
        listed = alice.get("/v1/tasks").json()["data"]
        grade = next(t for t in listed if t["id"] == "grade-ca")
        assert grade["fields"] == ["consigna", "curso", "respuesta"]
        assert grade["options"]["sampling"]["temperature"] == 0.1

        body = {"id": "g1", "task": "grade-ca", "items": [{"custom_id": f"a{i}", "fields": RECORD} for i in range(5)]}
        accepted = submit(alice, body).json()
        assert accepted["estimate_from_jobs"] == 0
        view = wait_ended(alice, "g1")
        assert view["status"] == "completed" and view["completed"] == 5
        (result, *_) = alice.get("/v1/jobs/g1/results").json()["data"]
        assert "Curs: 2n ESO" in result["parsed"]["feedback"]  # the task's template, filled from the record
        # the next job of the task is estimated from this one; a job of no task is not
        again = submit(alice, {**body, "id": "g2"}).json()
        assert again["estimate_from_jobs"] == 1
        plain = submit(alice, {"id": "p1", "items": [{"custom_id": "x", "prompt": "hola"}]}).json()
        assert plain["estimate_from_jobs"] == 0

        lines = "".join(json.dumps({"custom_id": f"l{i}", "fields": RECORD}) + "\n" for i in range(3))
        jsonl = alice.post("/v1/jobs", params={"id": "g3", "task": "grade-ca"}, content=lines,
                           headers={"Content-Type": "application/jsonl"})
        assert jsonl.status_code == 202, jsonl.text
        assert wait_ended(alice, "g3")["completed"] == 3

        unknown = alice.post("/v1/jobs", json={**body, "id": "g4", "task": "grade-xx"})
        assert unknown.status_code == 422 and unknown.json()["detail"][0]["field"] == "task"
    with serve(tmp_path / "again", FakeEngine(text=echo)) as api, api.as_(ADMIN) as admin:
        assert admin.get("/v1/tasks").status_code == 200


@pytest.fixture
def api(tmp_path):
    with serve(tmp_path, FakeEngine(text=echo)) as api:
        yield api


async def test_the_sdk_lists_tasks_and_submits_records_with_one(api):
    async with AsyncClient("http", base_url=api.url, api_key=api.bob) as client:
        assert "grade-ca" in [t["id"] for t in await client.tasks()]
        job = await client.submit([{"custom_id": "r1", "fields": RECORD}], task="grade-ca", id="sdk-task")
        final = await job.wait(timeout=30)
        assert final.summary.completed == 1
        assert (await job.status())["metadata"]["task_family"] == "grading"
