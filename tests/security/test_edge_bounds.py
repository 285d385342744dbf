"""Input that used to cost seconds, gigabytes or a 500 at the edge is bounded (issue 11, findings 2, 3 and 11.2).

Templates render in a sandbox with a work budget and an output cap, schemas have a size and a depth
cap, deeply nested JSON is refused naming its line, stop strings count toward the prompt limit, and a
file or body that is not UTF-8 names the line (and field) of its first bad byte.
"""

from __future__ import annotations

import json
import time
import tracemalloc

import httpx
import pytest

from shared.contracts.errors import InputError
from shared.contracts.inputs import parse_job, parse_job_document, parse_job_text
from shared.contracts.jsontext import JsonProblem, loads_document
from shared.contracts.prepare import Limits
from shared.contracts.settings import Settings
from shared.server.api import create_app
from shared.stores.sqlite import SQLiteStore
from tests.fakes import RecordingDispatcher


def templated(template: str, **fields) -> dict:
    return {"template": template, "items": [{"custom_id": "a", "fields": fields}]}


def refused_message(doc: dict) -> str:
    """The template's fault: the job is refused with strict=false too, naming the template."""
    with pytest.raises(InputError) as e:
        parse_job_document(doc, strict=False)
    (issue,) = e.value.issues
    assert issue.field == "template"
    return issue.message


def rejected_message(doc: dict) -> str:
    (r,) = parse_job_document(doc).rejected
    return r.message


# ## Templates: a work budget, bounded strings, a capped output


@pytest.mark.timeout(30)
@pytest.mark.parametrize("template", [
    "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}x",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "{% for c in s %}{% for d in s %}{% endfor %}{% endfor %}",
])
def test_loops_and_calls_that_never_end_blow_the_work_budget(template):
    started = time.perf_counter()
    message = refused_message(templated(template, s="x" * 20_000))
    assert "budget" in message and time.perf_counter() - started < 5


@pytest.mark.timeout(30)
@pytest.mark.parametrize("template", [
    "{{ 'a' * 10**8 }}", "{{ ['a'] * 10**8 }}", "{{ 'a'|center(10**8) }}", "{{ '%0100000000d' % 1 }}",
    "{{ '%0100000000d'|format(1) }}", "{{ '{:>100000000}'.format(1) }}", "{{ 'a'.ljust(10**8) }}",
    "{{ (s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s)|length }}", "{{ s|replace('x', s)|length }}",
    "{{ [s, s, s, s, s, s, s, s, s, s, s, s]|join|length }}",
    "{{ (s + s + s + s + s + s + s + s + s + s + s)|length }}",
    "{{ s|indent(100000000) }}", "{{ 10 ** 100000000 }}", "{{ lipsum(10**6) }}",
])
def test_strings_and_numbers_cannot_be_blown_up(template):
    tracemalloc.start()
    try:
        started = time.perf_counter()
        doc = templated(template, s="x" * 20_000)
        # lipsum is gone from the sandbox: a name the item lacks, so an item error
        message = rejected_message(doc) if "lipsum" in template else refused_message(doc)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message and time.perf_counter() - started < 5
    assert peak < 30 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_output_over_the_prompt_limit_stops_rendering_early():
    template = "{% for i in range(100000) %}{{ s }}{% endfor %}"
    tracemalloc.start()
    try:
        message = rejected_message(templated(template, s="x" * 1000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "200000" in message and peak < 30 * 2**20, f"{peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("template", ["{% for i in range(10**9) %}{% endfor %}", "{{ (10 ** 5000)|string }}",
                                      "{{ [].pop() }}", "{{ ''.__class__ }}"])
def test_a_template_over_its_budget_or_outside_the_sandbox_refuses_the_job_strict_or_not(template):
    assert refused_message(templated(template))
    with pytest.raises(InputError) as e:
        parse_job_document(templated(template), strict=True)
    assert [i.field for i in e.value.issues] == ["template"]


@pytest.mark.parametrize("template", ["{{ 1 // n }}", "{{ missing }}"])
def test_a_template_that_fails_on_the_items_data_is_an_item_error_and_refused_with_strict(template):
    doc = templated(template, n=0)
    assert parse_job_document(doc).rejected[0].field == "fields"
    with pytest.raises(InputError) as e:
        parse_job_document(doc, strict=True)
    assert [i.field for i in e.value.issues] == ["fields"]


def test_an_ordinary_template_still_renders():
    job = parse_job_document(templated("{% for w in words %}{{ loop.index }}. {{ w|upper }} {% endfor %}"
                                       "{{ '%s-%03d'|format(name, 7) }} {{ '{}!'.format(name) }} {{ '-' * 3 }}",
                                       words=["a", "b"], name="n"))
    (_, request), = job.prepared[1].items()
    assert request.messages[-1]["content"] == "1. A 2. B n-007 n! ---"


# ## Schemas: size and depth caps, checked before the schema is compiled


def with_schema(schema: dict) -> dict:
    return {"items": [{"custom_id": "a", "prompt": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": schema}}}


@pytest.mark.timeout(30)
def test_a_huge_schema_is_refused_quickly_naming_the_field():
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string", "maxLength": 10} for i in range(100_000)}}
    started = time.perf_counter()
    with pytest.raises(InputError) as e:
        parse_job_document(with_schema(schema))
    (issue,) = e.value.issues
    assert issue.field == "response_format.json_schema.schema" and "bytes" in issue.message
    assert time.perf_counter() - started < 3


@pytest.mark.parametrize("depth", [40, 2000])
def test_a_deep_schema_is_refused_naming_the_field(depth):
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    with pytest.raises(InputError) as e:
        parse_job_document(with_schema(schema))
    (issue,) = e.value.issues
    assert issue.field.startswith("response_format.json_schema.schema") and "deep" in issue.message


# ## Deeply nested JSON: a clear error naming the line, never a RecursionError


DEEP = "[" * 100_000 + "]" * 100_000


def test_a_deep_jsonl_line_is_an_issue_naming_the_line():
    text = '{"custom_id": "a", "prompt": "x"}\n{"custom_id": "b", "fields": {"v": ' + DEEP + "}}\n"
    job = parse_job_text(text)
    (r,) = job.rejected
    assert r.line == 2 and "deep" in r.message
    with pytest.raises(InputError) as e:
        parse_job_text(text, strict=True)
    assert [i.line for i in e.value.issues] == [2]


def test_a_number_of_more_digits_than_python_converts_is_an_issue_naming_the_line():
    huge = "9" * 5000
    job = parse_job_text('{"custom_id": "a", "prompt": "x"}\n{"custom_id": "b", "fields": {"v": ' + huge + "}}\n")
    (r,) = job.rejected
    assert r.line == 2 and "digits" in r.message
    with pytest.raises(JsonProblem, match="digits"):  # a whole document, in pieces or whole
        loads_document('{"items": [{"custom_id": "b", "fields": {"v": ' + huge + "}}]}")
    with pytest.raises(JsonProblem, match="digits"):
        loads_document("[" + huge + "]")


@pytest.mark.parametrize("depth", [300, 100_000])
def test_a_deep_job_document_file_names_the_line(tmp_path, depth):
    deep = "[" * depth + "]" * depth
    path = tmp_path / "job.json"
    path.write_text('{"items": [\n{"custom_id": "a", "prompt": "x"},\n{"custom_id": "b", "fields": {"v": ' + deep
                    + "}}\n]}\n")
    with pytest.raises(InputError) as e:
        job = parse_job(path, strict=True)
        job.wire()
    assert [i.line for i in e.value.issues] == [3] and "deep" in str(e.value)


@pytest.mark.parametrize(("content_type", "body", "line"), [
    ("application/json", '{"items": [{"prompt": "x"},\n{"fields": {"v": ' + DEEP + "}}]}", 2),
    ("application/jsonl", '{"prompt": "x"}\n\n{"fields": {"v": ' + DEEP + "}}\n", 3),
])
async def test_the_api_answers_422_naming_the_line_of_deep_json(tmp_path, content_type, body, line):
    app = create_app(Settings(_env_file=None, rate_limit_per_minute=0), store=SQLiteStore(tmp_path / "j.db"),
                     dispatcher=RecordingDispatcher())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
        r = await client.post("/v1/jobs", content=body.encode(), headers={"content-type": content_type})
    assert r.status_code == 422, r.text
    assert [d["line"] for d in r.json()["detail"]] == [line]


# ## Stop strings count toward the prompt limit


def test_stop_strings_count_toward_the_prompt_limit():
    limits = Limits(max_prompt_chars=100)
    doc = {"items": [{"custom_id": "a", "prompt": "x" * 50, "sampling": {"stop": ["y" * 30, "z" * 30]}},
                     {"custom_id": "b", "prompt": "x" * 50, "sampling": {"stop": ["y" * 30]}}]}
    job = parse_job_document(doc, limits=limits)
    assert [(r.custom_id, r.field) for r in job.rejected] == [("a", "prompt")]
    assert "110 characters" in job.rejected[0].message and "stop" in job.rejected[0].message
    job = parse_job_document({"sampling": {"stop": ["s" * 60]}, "items": [{"custom_id": "b", "prompt": "x" * 50}]},
                             limits=limits)
    assert [r.custom_id for r in job.rejected] == ["b"]  # the item's prompt plus the job's stop strings
    line = {"custom_id": "c", "method": "POST", "url": "/v1/chat/completions",
            "body": {"stop": ["q" * 60], "messages": [{"role": "user", "content": "x" * 50}]}}
    job = parse_job_text(json.dumps(line) + "\n", limits=limits)
    assert [(r.custom_id, r.field) for r in job.rejected] == [("c", "body.messages")]


# ## Bytes that are not UTF-8: the line and the field, not a byte offset


def test_a_file_that_is_not_utf8_names_the_line_and_field(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_bytes(b'{"custom_id": "a", "prompt": "ok"}\n{"custom_id": "b", "prompt": "ok"}\n'
                     b'{"custom_id": "c", "prompt": "caf\xe9"}\n')
    with pytest.raises(InputError) as e:
        parse_job(path)
    (issue,) = e.value.issues
    assert (issue.line, issue.field) == (3, "prompt") and "UTF-8" in issue.message
    assert "position" not in issue.message


async def test_a_body_that_is_not_utf8_names_the_line_and_field(tmp_path):
    app = create_app(Settings(_env_file=None, rate_limit_per_minute=0), store=SQLiteStore(tmp_path / "j.db"),
                     dispatcher=RecordingDispatcher())
    body = b'{"items": [\n  {"custom_id": "a", "prompt": "ok"},\n  {"custom_id": "b", "prompt": "\xff"}\n]}'
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
        r = await client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    (detail,) = r.json()["detail"]
    assert (detail["line"], detail["field"]) == (3, "items.1.prompt")
