"""OpenAI's Batches API through the official `openai` client: a batch is an llm-jobs job over an uploaded
file; its output and error files are OpenAI Batch output lines; list, cancel and unknown ids as OpenAI
answers them. The API runs under uvicorn with the local dispatcher on the fake engine (tests/fakes.py)."""

from __future__ import annotations

import json
import time

import openai
import pytest

from shared.contracts.errors import ErrorCode
from tests.api.test_openai_files import Api, batch_line, jsonl, serve, upload
from tests.fakes import FakeEngine

ENDED = ("completed", "failed", "cancelled", "expired")


def wait_for(api: Api, batch_id: str, statuses=ENDED, timeout_s: float = 30):
    deadline = time.monotonic() + timeout_s
    while True:
        b = api.client.batches.retrieve(batch_id)
        if b.status in statuses:
            return b
        assert time.monotonic() < deadline, f"batch {batch_id} still {b.status}"
        time.sleep(0.05)


def create(api: Api, file_id: str, **kw):
    return api.client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                     completion_window="24h", **kw)


@pytest.fixture
def api(tmp_path):
    with serve(tmp_path, FakeEngine(fail={"r2": ErrorCode.engine_error})) as api:
        yield api


def test_a_batch_runs_to_completion_with_output_and_error_files(api):
    good = [f"r{i}" for i in range(6)]
    data = jsonl(*(batch_line(c, f"question {c}") for c in good[:3]), batch_line("hot", temperature=9),
                 "not json", *(batch_line(c) for c in good[3:]))
    f = upload(api, data)
    b = create(api, f.id, metadata={"project": "essays"})
    assert b.object == "batch" and b.id.startswith("batch_") and b.input_file_id == f.id
    assert b.endpoint == "/v1/chat/completions" and b.completion_window == "24h"
    assert b.metadata == {"project": "essays"} and b.status in ("validating", "in_progress", "finalizing",
                                                                  "completed")
    assert b.request_counts.total == 8

    b = wait_for(api, b.id)
    assert b.status == "completed", b
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (8, 5, 3)
    assert b.completed_at and b.in_progress_at and b.created_at <= b.in_progress_at <= b.completed_at
    assert b.failed_at is None and b.cancelled_at is None and b.model == "fake-model"
    assert b.output_file_id == f"file-out-{b.id}" and b.error_file_id == f"file-err-{b.id}"
    assert b.usage.input_tokens == 5 * 5 and b.usage.output_tokens == 5 * 3  # "answer to rN": 3 words each

    out = [json.loads(x) for x in api.client.files.content(b.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in out) == ["r0", "r1", "r3", "r4", "r5"]
    for o in out:
        assert o["id"].startswith("batch_req_") and o["error"] is None
        assert o["response"]["status_code"] == 200
        body = o["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == "fake-model"
        assert body["choices"][0]["message"] == {"role": "assistant", "content": f"answer to {o['custom_id']}"}
        assert body["usage"]["prompt_tokens"] == 5

    errors = {e["custom_id"]: e for e in
              (json.loads(x) for x in api.client.files.content(b.error_file_id).text.splitlines())}
    assert set(errors) == {"hot", "item-4", "r2"}
    assert errors["hot"]["error"]["code"] == "invalid_item"
    assert "line 4" in errors["hot"]["error"]["message"] and "body.temperature" in errors["hot"]["error"]["message"]
    assert errors["hot"]["response"]["status_code"] == 400
    assert "line 5" in errors["item-4"]["error"]["message"]
    assert errors["r2"]["error"]["code"] == "engine_error" and errors["r2"]["response"]["status_code"] == 500

    # the output files are files too, and the batch is a job
    assert api.client.files.retrieve(b.output_file_id).purpose == "batch_output"
    assert api.client.files.retrieve(b.error_file_id).status == "processed"
    job = api.http.get(f"/v1/jobs/{b.id}").json()
    assert job["status"] == "completed" and job["total"] == 8 and job["completed"] == 5
    assert job["metadata"]["_openai_batch"]["input_file_id"] == f.id


def test_batches_list_newest_first_in_pages_of_batches_only(api):
    f = upload(api, jsonl(batch_line("a"), batch_line("b")))
    ids = [create(api, f.id).id for _ in range(3)]
    r = api.http.post("/v1/jobs", json={"id": "not-a-batch", "items": [{"custom_id": "x", "prompt": "y"}]})
    assert r.status_code == 202
    page = api.client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    raw = api.http.get("/v1/batches", params={"limit": 2}).json()
    assert raw["object"] == "list" and raw["first_id"] == ids[2] and raw["last_id"] == ids[1] and raw["has_more"]
    second = api.client.batches.list(limit=2, after=page.data[-1].id)
    assert [b.id for b in second.data] == [ids[0]] and not second.has_more
    assert [b.id for b in api.client.batches.list(limit=2)] == ids[::-1]  # the client pages through them all
    with pytest.raises(openai.BadRequestError) as e:
        api.client.batches.list(limit=1000)
    assert e.value.param == "limit"


def test_cancel_stops_a_running_batch(tmp_path):
    with serve(tmp_path, FakeEngine(capacity=1, delay=lambda r: 0.2)) as api:
        f = upload(api, jsonl(*(batch_line(f"r{i:02d}") for i in range(30))))
        b = create(api, f.id)
        wait_for(api, b.id, statuses=("in_progress",))
        cancelled = api.client.batches.cancel(b.id)
        assert cancelled.status in ("cancelling", "cancelled") and cancelled.cancelling_at
        b = wait_for(api, b.id)
        assert b.status == "cancelled" and b.cancelled_at and b.request_counts.completed < 30
        assert api.client.batches.cancel(b.id).status == "cancelled"  # again: nothing changes
        assert api.http.get(f"/v1/jobs/{b.id}").json()["status"] == "cancelled"


def test_unknown_ids_and_bad_requests_in_openais_shape(api):
    for call in (lambda: api.client.batches.retrieve("batch_nope"), lambda: api.client.batches.cancel("batch_nope"),
                 lambda: create(api, "file-nope")):
        with pytest.raises(openai.NotFoundError):
            call()
    r = api.http.post("/v1/jobs", json={"id": "plain-job", "items": [{"custom_id": "x", "prompt": "y"}]})
    assert r.status_code == 202
    with pytest.raises(openai.NotFoundError):  # a job that is not a batch
        api.client.batches.retrieve("plain-job")

    f = upload(api, jsonl(batch_line("a")))
    with pytest.raises(openai.BadRequestError) as e:
        api.client.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
    assert e.value.param == "endpoint"
    with pytest.raises(openai.BadRequestError) as e:
        api.client.batches.create(input_file_id=f.id, endpoint="/v1/completions", completion_window="48h")
    assert e.value.param == "completion_window"
    with pytest.raises(openai.BadRequestError) as e:
        create(api, f.id, metadata={str(i): "v" for i in range(17)})
    assert e.value.param == "metadata"
    r = api.http.post("/v1/batches", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_an_idempotency_key_sent_again_gives_the_same_batch(api):
    f = upload(api, jsonl(batch_line("a")))
    first = create(api, f.id, extra_headers={"Idempotency-Key": "nightly-1"})
    again = create(api, f.id, extra_headers={"Idempotency-Key": "nightly-1"})
    other = create(api, f.id, extra_headers={"Idempotency-Key": "nightly-2"})
    assert first.id == again.id != other.id
    assert [b.id for b in api.client.batches.list()] == [other.id, first.id]
