"""The grading service's routes (/evaluate, /stream, /health) on llm-jobs: the contract kept field for field,
driven by the contract-only client in examples/dropin_client.py (uvicorn, SQLite, the local dispatcher on
the fake engine). tests/integration/test_dropin.py runs the same client against `llm-jobs serve` on the real
engine."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import httpx
import pytest

from shared.contracts.errors import ErrorCode
from tests.api.test_owners import serve
from tests.fakes import FakeEngine

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("dropin_client", ROOT / "examples" / "dropin_client.py")
client = importlib.util.module_from_spec(spec)
spec.loader.exec_module(client)


def answers(n: int, *, int_ids: bool = False) -> list[dict]:
    return [{"id_alumno": i if int_ids else f"alumne-{i:03d}", "curso": "3r ESO",
             "consigna": "Explica què és un ecosistema.", "respuesta": f"Resposta número {i}."} for i in range(n)]


def grader(request) -> str:
    return json.dumps({"nota": len(request.custom_id) % 6, "feedback": "Bona feina, però revisa els accents."})


@pytest.fixture
def api(tmp_path):
    with serve(tmp_path, FakeEngine(text=grader, fail={"7": ErrorCode.engine_error})) as api:
        yield api


def test_the_contract_only_client_grades_every_answer_in_batches_of_ten(api):
    accepted, results, done = client.grade(api.url, answers(25, int_ids=True), api.alice)
    assert set(accepted) == {"job_id", "total_items", "estimated_time_seconds", "status", "stream_url"}
    assert accepted["total_items"] == 25 and accepted["stream_url"] == f"/stream/{accepted['job_id']}"
    assert done == {"total_processed": 25, "total_time_seconds": done["total_time_seconds"], "status": "completed"}
    assert sorted(r["id_alumno"] for r in results) == list(range(25))  # integers in, integers out
    failed = [r for r in results if r["id_alumno"] == 7]
    assert failed == [{"id_alumno": 7, "nota": None, "feedback": None, "error": failed[0]["error"]}]
    ok = [r for r in results if r["id_alumno"] != 7]
    assert all(0 <= r["nota"] <= 5 and r["feedback"].startswith("Bona feina") for r in ok)


def test_batches_carry_the_services_progress_figures(api):
    with httpx.Client(base_url=api.url, headers={"X-API-Key": api.alice}, timeout=30) as http:  # its own header
        accepted = http.post("/evaluate", json={"items": answers(23), "callback_url": "ignored"}).json()
        with http.stream("GET", accepted["stream_url"]) as s:
            events = list(client.sse(s.iter_lines()))
    batches = [json.loads(d) for e, d in events if e == "batch_complete"]
    assert [b["batch_number"] for b in batches] == [1, 2, 3]
    assert [len(b["results"]) for b in batches] == [10, 10, 3]
    last = batches[-1]["progress"]
    assert (last["completed"], last["total"], last["percentage"]) == (23, 23, 100.0)
    assert last["estimated_remaining_seconds"] == 0.0 and last["avg_time_per_item"] >= 0
    assert set(batches[0]["progress"]) == {"completed", "total", "percentage", "elapsed_seconds",
                                           "estimated_remaining_seconds", "avg_time_per_item"}
    assert events[-1][0] == "complete" and json.loads(events[-1][1])["total_processed"] == 23
    # the job is an ordinary job of the grade-ca task
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.alice}"}) as http:
        view = http.get(f"/v1/jobs/{accepted['job_id']}").json()
    assert view["status"] == "completed" and view["metadata"]["service"] == "evaluate"


def test_bad_requests_name_the_item_and_field_and_other_owners_see_nothing(api):
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.alice}"}, timeout=30) as alice:
        twice = answers(3)
        twice[2]["id_alumno"] = twice[0]["id_alumno"]
        r = alice.post("/evaluate", json={"items": twice})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "items.2.id_alumno"
        missing = answers(2)
        del missing[1]["respuesta"]
        r = alice.post("/evaluate", json={"items": missing})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "items.1.respuesta"
        assert alice.post("/evaluate", json={"items": []}).status_code == 422
        assert alice.post("/evaluate", content=b"\xff", headers={"Content-Type": "application/json"}).status_code == 422
        job_id = alice.post("/evaluate", json={"items": answers(2)}).json()["job_id"]
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.bob}"}) as bob:
        assert bob.get(f"/stream/{job_id}").status_code == 404
    assert httpx.post(f"{api.url}/evaluate", json={"items": answers(1)}).status_code == 401


def test_health_answers_the_services_fields(api):
    health = httpx.get(f"{api.url}/health", timeout=30).json()
    assert set(health) == {"status", "model_loaded", "gpu_available", "active_jobs"}
    assert health["status"] == "healthy" and health["model_loaded"] is True and health["active_jobs"] == 0
    assert health["gpu_available"] is False  # the local engine, on this CPU machine
