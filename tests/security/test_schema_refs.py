"""A JSON schema can never make llm-jobs fetch a URL or read a file (issue 11, finding 1: SSRF).

A `$ref` that points outside the schema is refused where the job comes in, naming the field; the
validators are built with a registry that retrieves nothing. A loopback HTTP server stands in for
the target and must see no request.
"""

from __future__ import annotations

import http.server
import json
import threading

import httpx
import pytest

from handler.runner import run_job
from shared.contracts.errors import InputError
from shared.contracts.events import ChunkEvent, FinalEvent
from shared.contracts.inputs import parse_job_document, parse_job_text
from shared.contracts.models import ResultStatus
from shared.contracts.settings import Settings
from shared.server.api import create_app
from shared.stores.sqlite import SQLiteStore
from tests.fakes import FakeEngine, RecordingDispatcher


@pytest.fixture
def target():
    """A loopback server that records every request it gets (the SSRF target)."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            body = json.dumps({"type": "string", "maxLength": 1}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def job_with(schema: dict, **extra) -> dict:
    return {"items": [{"custom_id": "a", "prompt": "hi"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "out", "schema": schema}}, **extra}


@pytest.mark.parametrize("ref", ["{url}/schema.json", "file:///etc/passwd", "other.json#/defs/a", "//host/x"])
def test_a_job_schema_that_refers_outside_itself_is_refused_naming_the_field(ref, target):
    url, seen = target
    schema = {"type": "object", "properties": {"nota": {"$ref": ref.format(url=url)}}}
    with pytest.raises(InputError) as e:
        parse_job_document(job_with(schema))
    (issue,) = e.value.issues
    assert issue.field == "response_format.json_schema.schema.properties.nota.$ref"
    assert "only references inside the schema" in issue.message
    assert seen == []


def test_an_openai_lines_schema_that_refers_outside_itself_is_an_error_result(target):
    url, seen = target
    line = {"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions", "body": {
        "model": "m", "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "$defs": {"a": {"$dynamicRef": f"{url}/d"}}}}}}}
    job = parse_job_text(json.dumps(line) + "\n", any_model=True)
    (rejected,) = job.rejected
    assert rejected.field == "body.response_format.json_schema.schema.$defs.a.$dynamicRef"
    assert seen == []


async def test_local_refs_still_validate_the_output_and_nothing_is_fetched(target):
    _, seen = target
    schema = {"$defs": {"grade": {"type": "integer", "minimum": 0, "maximum": 5}}, "type": "object",
              "properties": {"nota": {"$ref": "#/$defs/grade"}}, "required": ["nota"]}
    answers = {"ok": '{"nota": 4}', "high": '{"nota": 9}'}
    job = parse_job_document({**job_with(schema), "items": [{"custom_id": k, "prompt": "x"} for k in answers]})
    engine = FakeEngine(text=lambda r: answers[r.custom_id])
    events = [e async for e in run_job(job, engine)]
    results = {r.custom_id: r for e in events if isinstance(e, ChunkEvent) for r in e.results}
    assert results["ok"].status == ResultStatus.ok and results["ok"].parsed == {"nota": 4}
    assert results["high"].error.code == "invalid_output" and "nota" in results["high"].error.message
    assert isinstance(events[-1], FinalEvent) and seen == []


async def test_the_api_answers_422_with_the_field_and_fetches_nothing(target, tmp_path):
    url, seen = target
    dispatcher = RecordingDispatcher()
    app = create_app(Settings(_env_file=None, rate_limit_per_minute=0), store=SQLiteStore(tmp_path / "j.db"),
                     dispatcher=dispatcher)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
        r = await client.post("/v1/jobs", json=job_with({"$ref": f"{url}/s"}, id="ssrf"))
        assert r.status_code == 422, r.text
        (detail,) = r.json()["detail"]
        assert detail["field"] == "response_format.json_schema.schema.$ref"
        assert (await client.get("/v1/jobs/ssrf")).status_code == 404  # nothing was accepted
    assert dispatcher.jobs == [] and seen == []
