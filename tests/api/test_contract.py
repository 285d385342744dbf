"""The committed openapi.json is the API's document, and the SDK's public names are pinned."""

from __future__ import annotations

import json
from pathlib import Path

import shared
import shared.sdk
from shared.server.api.app import openapi_document

ROOT = Path(__file__).resolve().parents[2]


def test_openapi_json_is_up_to_date():
    committed = json.loads((ROOT / "openapi.json").read_text())
    assert committed == json.loads(json.dumps(openapi_document())), "run: llm-jobs openapi"


def test_openapi_document_is_complete():
    doc = openapi_document()
    paths = doc["paths"]
    assert set(paths) == {"/healthz", "/readyz", "/metrics", "/v1/jobs", "/v1/jobs/{job_id}",
                          "/v1/jobs/{job_id}/results", "/v1/jobs/{job_id}/events", "/v1/jobs/{job_id}/cancel",
                          "/v1/files", "/v1/files/{file_id}",
                          "/v1/files/{file_id}/content", "/v1/batches", "/v1/batches/{batch_id}",
                          "/v1/batches/{batch_id}/cancel", "/v1/evals/suites", "/v1/evals/suites/{suite_id}",
                          "/v1/evals/suites/{suite_id}/history", "/v1/evals/runs", "/v1/evals/runs/{run_id}",
                          "/v1/evals/runs/{run_id}/cases", "/v1/evals/runs/{run_id}/report", "/v1/schedules",
                          "/v1/schedules/{schedule_id}", "/v1/tasks", "/v1/models", "/v1/plan", "/evaluate",
                          "/stream/{job_id}", "/health"}
    assert set(paths["/v1/evals/suites"]["post"]["requestBody"]["content"]) == {"application/yaml",
                                                                                "application/json"}
    assert {"scores", "regressions", "events_url"} <= set(doc["components"]["schemas"]["EvalRunView"]["properties"])
    submit = paths["/v1/jobs"]["post"]
    assert set(submit["requestBody"]["content"]) == {"application/json", "application/jsonl"}
    assert {"202", "200", "413", "422", "401", "403", "429"} <= set(submit["responses"])
    assert "examples" in doc["components"]["schemas"]["JobIn"]
    assert "input_file_id" in doc["components"]["schemas"]["JobFromFile"]["properties"]
    assert "examples" in doc["components"]["schemas"]["JobAccepted"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert all(op.get("security") for p, ops in paths.items() if p.startswith("/v1/") for op in ops.values())
    assert "text/event-stream" in paths["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]


def test_public_names_are_pinned():
    assert shared.sdk.__all__ == ["AsyncClient", "AsyncJob", "Client", "JobHandle"]
    assert {"AsyncClient", "AsyncJob", "Client", "JobHandle", "ApiError", "AuthError", "NotFound", "RateLimited",
            "JobFailed"} <= set(shared.__all__)
    for name in shared.__all__:
        assert getattr(shared, name) is not None
