"""A job over an uploaded file: `POST /v1/jobs {"input_file_id": ...}`, and the SDK's `submit(path)`,
which streams a JSONL file to POST /v1/files in parts and never reads it whole. The API runs under
uvicorn with the local dispatcher on the fake engine."""

from __future__ import annotations

import json
import tracemalloc

from shared.sdk import Client
from tests.api.test_openai_files import KEY, batch_line, jsonl, serve, upload


def test_a_job_over_an_uploaded_file_runs_with_our_options(tmp_path):
    with serve(tmp_path) as api:
        lines = [json.dumps({"custom_id": f"f{i}", "fields": {"n": i}}) for i in range(9)]
        f = upload(api, jsonl(*lines))
        r = api.http.post("/v1/jobs", json={"id": "from-file", "input_file_id": f.id, "template": "Count to {{ n }}.",
                                            "priority": "high"})
        assert r.status_code == 202, r.text
        assert r.json()["total"] == 9
        final = None
        with api.http.stream("GET", "/v1/jobs/from-file/events") as s:
            for line in s.iter_lines():
                if line.startswith("data:") and json.loads(line[5:])["type"] == "final":
                    final = json.loads(line[5:])
                    break
        assert final["outcome"] == "completed" and final["summary"]["completed"] == 9
        page = api.http.get("/v1/jobs/from-file/results", params={"limit": 100}).json()["data"]
        assert [p["custom_id"] for p in page] == [f"f{i}" for i in range(9)]
        assert {p["text"] for p in page} == {f"answer to f{i}" for i in range(9)}
        # the same id again: known, nothing new runs
        again = api.http.post("/v1/jobs", json={"id": "from-file", "input_file_id": f.id})
        assert again.status_code == 200 and again.json()["created"] is False


def test_refusals_name_the_field(tmp_path):
    with serve(tmp_path) as api:
        f = upload(api, jsonl(batch_line("a")))
        unknown = api.http.post("/v1/jobs", json={"input_file_id": "file-nope"})
        assert unknown.status_code == 404
        both = api.http.post("/v1/jobs", json={"input_file_id": f.id, "items": [{"prompt": "x"}]})
        assert both.status_code == 422 and both.json()["detail"][0]["field"] == "items"
        bad_template = api.http.post("/v1/jobs", json={"input_file_id": f.id, "template": "{% if %}"})
        assert bad_template.status_code == 422 and bad_template.json()["detail"][0]["field"] == "template"


def test_the_sdk_streams_a_file_to_the_api_and_never_reads_it_whole(tmp_path):
    path = tmp_path / "big.jsonl"
    n = 10_000
    with path.open("w") as out:
        for i in range(n):
            out.write(json.dumps({"custom_id": f"s{i:05d}", "prompt": f"{i} " + "z" * 2000}) + "\n")
    size = path.stat().st_size
    with serve(tmp_path, stage_batch_items=500, shard_size=1000) as api:
        client = Client("http", base_url=api.url, api_key=KEY)
        try:
            tracemalloc.start()
            handle = client.submit(path, id="sdk-file")
            _, peak = tracemalloc.get_traced_memory()  # this process: the SDK's side and the API's
            tracemalloc.stop()
            final = handle.wait()
            assert final.outcome == "completed" and final.summary.completed == n
            assert sum(1 for _ in handle.results(page_size=700)) == n
        finally:
            client.close()
    assert size > 20 * 10**6 and peak < size / 3, (size, peak)
