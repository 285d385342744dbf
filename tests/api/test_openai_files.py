"""OpenAI's Files API through the official `openai` client: uploads streamed and checked line by line, a bad
line kept as refused (naming the line and the field), refusals in OpenAI's error shape, and a big upload
that the API never holds whole.

The API runs under uvicorn on loopback (a real streamed multipart body) with the SQLite store and the local
dispatcher on the fake engine (tests/fakes.py)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from handler.service import JobService
from shared.contracts.settings import Settings
from shared.server.api import create_app
from shared.server.dispatch import LocalDispatcher
from shared.stores.sqlite import SQLiteStore
from testkit.serve import ThreadedServer
from tests.fakes import FakeEngine

KEY = "openai-files-key"


@dataclass
class Api:
    url: str
    client: openai.OpenAI
    http: httpx.Client
    settings: Settings
    engine: FakeEngine


@contextmanager
def serve(tmp_path: Path, engine: FakeEngine | None = None, **overrides) -> Iterator[Api]:
    """The API on loopback: SQLite, the local dispatcher on a fake engine, small staging batches and shards."""
    settings = Settings(_env_file=None, api_keys=KEY, rate_limit_per_minute=0, sse_poll_s=0.05,
                        **{"stage_batch_items": 3, "shard_size": 4, **overrides})
    store = SQLiteStore(tmp_path / "jobs.db")
    engine = engine or FakeEngine()
    dispatcher = LocalDispatcher(settings, store, JobService(engine, settings, store=store))
    server = ThreadedServer(create_app(settings, store=store, dispatcher=dispatcher)).start()
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=60)
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    try:
        yield Api(server.url, client, http, settings, engine)
    finally:
        http.close()
        client.close()
        server.stop()


@pytest.fixture
def api(tmp_path) -> Iterator[Api]:
    with serve(tmp_path) as api:
        yield api


def batch_line(custom_id: str, content: str = "Hi", **body) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "fake-model", "messages": [{"role": "user", "content": content}], **body}})


def jsonl(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def upload(api: Api, data: bytes, name: str = "input.jsonl", purpose: str = "batch"):
    return api.client.files.create(file=(name, io.BytesIO(data), "application/jsonl"), purpose=purpose)


# ## Uploads


def test_a_good_file_is_processed_and_reads_back(api):
    lines = [batch_line(f"r{i}", f"question {i}") for i in range(7)] + [json.dumps({"custom_id": "plain",
                                                                                   "prompt": "an item"})]
    data = jsonl(*lines[:4], "", *lines[4:])  # a blank line is skipped
    f = upload(api, data, name="questions.jsonl")
    assert f.object == "file" and f.id.startswith("file-") and f.purpose == "batch" and f.status == "processed"
    assert f.bytes == len(data) and f.filename == "questions.jsonl" and f.created_at > 1_700_000_000
    again = api.client.files.retrieve(f.id)
    assert again.id == f.id and again.bytes == len(data) and again.status == "processed"
    content = api.client.files.content(f.id).text.splitlines()
    assert [json.loads(x) for x in content] == [json.loads(x) for x in lines]


def test_bad_lines_are_kept_as_refused_naming_the_line_and_the_field(api):
    data = jsonl(batch_line("a"), batch_line("hot", temperature=9), "not json at all", batch_line("b"),
                 '{"custom_id": "both", "prompt": "x", "messages": [{"role": "user", "content": "y"}]}')
    f = upload(api, data)
    assert f.status == "processed"  # bad lines do not refuse the file: they become error lines of its batch
    rows = [json.loads(x) for x in api.client.files.content(f.id).text.splitlines()]
    assert [r["custom_id"] for r in rows] == ["a", "hot", "item-2", "b", "both"]
    assert rows[1]["error"] == {"code": "invalid_item", "message": rows[1]["error"]["message"], "line": 2,
                                "field": "body.temperature"}
    assert rows[2]["error"]["line"] == 3 and "not valid JSON" in rows[2]["error"]["message"]
    assert rows[4]["error"]["line"] == 5 and "exactly one of" in rows[4]["error"]["message"]


def test_a_repeated_custom_id_refuses_the_file_naming_both_lines(api):
    with pytest.raises(openai.BadRequestError) as e:
        upload(api, jsonl(batch_line("a"), batch_line("b"), batch_line("c"), batch_line("d"), batch_line("b")))
    assert e.value.status_code == 400 and e.value.param == "custom_id"
    assert "line 5" in e.value.message and "repeats line 2" in e.value.message


def test_purpose_must_be_batch(api):
    with pytest.raises(openai.BadRequestError) as e:
        upload(api, jsonl(batch_line("a")), purpose="fine-tune")
    assert e.value.param == "purpose" and "batch" in e.value.message
    # the field missing, or sent after the file
    r = api.http.post("/v1/files", files={"file": ("a.jsonl", jsonl(batch_line("a")))})
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    r = api.http.post("/v1/files", files=[("file", ("a.jsonl", jsonl(batch_line("a")))), ("purpose", (None, "x"))])
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"


def test_what_is_not_a_file_upload_is_a_bad_request(api):
    r = api.http.post("/v1/files", json={"purpose": "batch"})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]["message"]
    r = api.http.post("/v1/files", data={"purpose": "batch"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = api.http.post("/v1/files", content=b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n{}",
                      headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 400 and "closing boundary" in r.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="no lines"):
        upload(api, b"\n\n")


def test_a_file_over_max_upload_bytes_is_413(tmp_path):
    with serve(tmp_path, max_upload_bytes=64 * 1024, stage_batch_items=10) as api:
        data = jsonl(*(batch_line(f"r{i}", "x" * 200) for i in range(400)))  # about 120 KB
        with pytest.raises(openai.APIStatusError) as e:
            upload(api, data)
        assert e.value.status_code == 413 and e.value.code == "file_too_large" and e.value.param == "file"
        # the connection was not broken: the next upload on the same client works
        assert upload(api, data[:30_000].rsplit(b"\n", 1)[0] + b"\n").status == "processed"


def test_a_file_over_max_items_per_job_lines_is_refused(tmp_path):
    with serve(tmp_path, max_items_per_job=5) as api:
        assert upload(api, jsonl(*(batch_line(f"r{i}") for i in range(5)))).status == "processed"
        with pytest.raises(openai.BadRequestError, match="over 5 lines"):
            upload(api, jsonl(*(batch_line(f"r{i}") for i in range(6))))


def test_unknown_files_are_not_found(api):
    for call in (lambda: api.client.files.retrieve("file-nope"), lambda: api.client.files.content("file-nope"),
                 lambda: api.client.files.retrieve("file-out-batch_nope"),
                 lambda: api.client.files.content("file-err-batch_nope")):
        with pytest.raises(openai.NotFoundError) as e:
            call()
        assert e.value.status_code == 404 and e.value.type == "invalid_request_error"


def test_a_wrong_key_is_refused_in_openais_shape(api):
    other = openai.OpenAI(base_url=f"{api.url}/v1", api_key="not-a-key", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as e:
        other.files.retrieve("file-x")
    assert e.value.code == "invalid_api_key"
    r = httpx.get(f"{api.url}/v1/batches")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_a_30_mb_upload_is_never_held_whole(tmp_path):
    """The upload streams from another process; this one (the API) allocates a bounded amount meanwhile."""
    path = tmp_path / "big.jsonl"
    size, n = 30 * 2**20, 0
    with path.open("w") as f:
        while f.tell() < size:
            f.write(batch_line(f"r{n}", "x" * 3000) + "\n")
            n += 1
    with serve(tmp_path, stage_batch_items=500) as api:
        sender = textwrap.dedent(f"""
            import httpx
            with open({str(path)!r}, "rb") as f:
                r = httpx.post({api.url!r} + "/v1/files", data={{"purpose": "batch"}}, files={{"file": f}},
                               headers={{"Authorization": "Bearer {KEY}"}}, timeout=300)
            print(r.status_code, r.text)
        """)
        tracemalloc.start()
        try:
            done = subprocess.run([sys.executable, "-c", sender], capture_output=True, text=True, timeout=300)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        status, _, body = done.stdout.partition(" ")
        assert status == "200", done.stdout + done.stderr
        f = json.loads(body)
        assert f["status"] == "processed" and f["bytes"] == path.stat().st_size
        assert peak < path.stat().st_size / 4, f"peak {peak / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB upload"
        tail = api.client.files.content(f["id"]).text.splitlines()
        assert len(tail) == n and json.loads(tail[-1])["custom_id"] == f"r{n - 1}"
