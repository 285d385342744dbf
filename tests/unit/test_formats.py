"""Result lines in our format and as OpenAI Batch output lines, and round trips."""

from __future__ import annotations

import json

from shared.cli.output import ResultWriter
from shared.contracts.models import Result, ResultStatus, Usage
from shared.contracts.openai_batch import from_openai, to_openai

OK = Result(custom_id="a", status=ResultStatus.ok, text="Paris", finish_reason="stop",
            usage=Usage(prompt_tokens=7, completion_tokens=2, total_tokens=9), latency_ms=12.5)
BAD = Result.failure("b", "model_not_found", "line 3, field 'body.model': no such model")


def test_ok_result_as_openai_line():
    line = to_openai(OK, job_id="j", model="m")
    assert line["custom_id"] == "a" and line["error"] is None
    resp = line["response"]
    assert resp["status_code"] == 200 and resp["body"]["object"] == "chat.completion"
    assert resp["body"]["choices"][0]["message"] == {"role": "assistant", "content": "Paris"}
    assert resp["body"]["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert line["id"] == to_openai(OK, job_id="j", model="m")["id"]  # stable across re-runs


def test_error_result_as_openai_line_has_status_code_and_error():
    line = to_openai(BAD, job_id="j", model="m")
    assert line["response"]["status_code"] == 404
    assert line["error"] == {"code": "model_not_found", "message": BAD.error.message}
    assert line["response"]["body"]["error"]["code"] == "model_not_found"


def test_round_trips_through_openai_format():
    for r in (OK, BAD):
        back = from_openai(json.loads(json.dumps(to_openai(r, job_id="j", model="m"))))
        assert back.model_dump(exclude={"latency_ms"}) == r.model_dump(exclude={"latency_ms"})


def test_round_trips_through_our_format():
    assert Result.model_validate_json(OK.model_dump_json()) == OK


def test_writer_appends_durable_lines_per_chunk(tmp_path):
    path = tmp_path / "out.jsonl"
    w = ResultWriter(path, "openai", job_id="j", model="m")
    w.write([OK])
    assert len(path.read_text().splitlines()) == 1  # on disk before the next chunk
    w.write([BAD])
    w.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == ["a", "b"]
