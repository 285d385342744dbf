"""A corpus of hostile inputs for `POST /v1/jobs`, each with the answer it must get.

Every case is one request: a body (JSON or JSONL), a content type, the query, and what must come
back: the status and, for a 422, the field (and line) the first issue names. `tests/security/
test_corpus.py` sends each one to the real API (uvicorn on loopback, a real SQLite store) and also
checks that nothing was dispatched for a refused job and that the server still answers.

Add a case here whenever an input is found to misbehave; keep the expectation exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from dataclasses import field as _field
from typing import Any

CHAT = "/v1/chat/completions"


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    status: int
    #: the first issue's field ("" when it names none)
    field: str = ""
    line: int | None = None
    content_type: str = "application/json"
    query: dict[str, str] = _field(default_factory=dict)
    #: text the first issue's message must contain
    says: str = ""


def _job(**over: Any) -> dict[str, Any]:
    return {"items": [{"custom_id": "a", "prompt": "hi"}], **over}


def _json(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _jsonl(*lines: Any) -> bytes:
    return "".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines).encode()


def _line(custom_id: str = "a", **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": CHAT,
            "body": {"messages": [{"role": "user", "content": "hi"}], **body}}


def _schema(schema: Any) -> dict[str, Any]:
    return _job(response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}})


def _deep(n: int) -> str:
    return "[" * n + "]" * n


def _template(text: str) -> dict[str, Any]:
    return {"template": text, "items": [{"custom_id": "a", "fields": {"x": 1}}]}


SCHEMA = "response_format.json_schema.schema"

CASES: list[Case] = [
    # -- the body itself
    Case("not json", b"{nope", 422, says="not valid JSON"),
    Case("json array not object", b"[1, 2]", 422),
    Case("not utf-8", b'{"items": [{"custom_id": "a", "prompt": "\xff\xfe"}]}', 422, line=1,
         field="items.0.prompt", says="UTF-8"),
    Case("not utf-8 in jsonl line 3", _jsonl(_line("a"), _line("b")) + b'{"custom_id": "\xc3\x28"}\n', 422,
         line=3, field="custom_id", content_type="application/jsonl", says="UTF-8"),
    Case("100k-deep json", _deep(100_000).encode(), 422, line=1, says="nested deeper"),
    Case("100k-deep value inside a job", f'{{"items": [{{"custom_id": "a", "prompt": {_deep(100_000)}}}]}}'.encode(),
         422, field="items", line=1, says="nested deeper"),
    Case("100k-deep jsonl line 2", _jsonl(_line("a"), _deep(100_000)), 422, line=2, says="nested deeper",
         content_type="application/jsonl"),
    # -- job fields
    Case("bad id", _json(_job(id="../../etc/passwd")), 422, field="id"),
    Case("no items", _json(_job(items=[])), 422, field="items"),
    Case("duplicate custom_id", _json(_job(items=[{"custom_id": "a", "prompt": "x"}] * 2)), 422,
         field="custom_id"),
    Case("temperature too hot", _json(_job(sampling={"temperature": 9})), 422, field="sampling.temperature"),
    Case("seed over 64 bits", _json(_job(sampling={"seed": 10**26})), 422, field="sampling.seed"),
    Case("negative seed", _json(_job(sampling={"seed": -1})), 422, field="sampling.seed"),
    Case("max_tokens over the cap", _json(_job(sampling={"max_tokens": 10**9})), 422, field="sampling.max_tokens"),
    Case("unknown job field", _json(_job(evil=True)), 422, field="evil"),
    Case("prompt over the limit", _json(_job(items=[{"custom_id": "a", "prompt": "x" * 200_001}])), 422,
         field="prompt"),
    Case("stop strings over the limit", _json(_job(sampling={"stop": ["s" * 100_000] * 3})), 422,
         field="prompt", says="in stop strings"),
    # -- schemas
    Case("remote $ref", _json(_schema({"$ref": "http://127.0.0.1:9/s"})), 422, field=f"{SCHEMA}.$ref"),
    Case("file $ref", _json(_schema({"properties": {"a": {"$ref": "file:///etc/passwd"}}})), 422,
         field=f"{SCHEMA}.properties.a.$ref"),
    Case("not a schema", _json(_schema({"type": 12})), 422, field=SCHEMA),
    Case("100k-property schema", _json(_schema({"type": "object", "properties": {
        f"p{i}": {"type": "string"} for i in range(100_000)}})), 422, field=SCHEMA),
    Case("deep schema", _json(_schema(json.loads('{"items": ' * 200 + "{}" + "}" * 200))), 422,
         field=f"{SCHEMA}.items.items.items", says="nested deeper"),
    # -- templates
    Case("template syntax", _json(_template("{% for %}")), 422, field="template"),
    Case("template escapes the sandbox", _json(_template("{{ ''.__class__.__mro__[1].__subclasses__() }}")), 422,
         field="template", says="unsafe"),
    Case("template nested range loops", _json(_template(
        "{% for i in range(10000) %}{% for j in range(10000) %}{{ x }}{% endfor %}{% endfor %}")), 422,
         field="template", says="steps"),
    Case("template string repetition", _json(_template("{{ 'a' * 10**8 }}")), 422, field="template",
         says="repetition"),
    Case("template range(10**9)", _json(_template("{{ range(10**9) | list | length }}")), 422, field="template",
         says="range()"),
    Case("template range(10**9), strict=false", _json(_template("{{ range(10**9) | list | length }}")), 422,
         field="template", query={"strict": "false"}),
    Case("template missing field", _json(_template("{{ y }}")), 422, field="fields", says="'y' is undefined"),
    # -- OpenAI Batch lines
    Case("openai line with tools", _jsonl(_line(tools=[{"type": "function"}])), 422, field="body.tools", line=1,
         content_type="application/jsonl"),
    Case("openai n=2", _jsonl(_line(n=2)), 422, field="body.n", line=1, content_type="application/jsonl"),
    Case("openai remote $ref", _jsonl(_line(response_format={"type": "json_schema", "json_schema": {
        "name": "s", "schema": {"$ref": "http://169.254.169.254/latest"}}})), 422,
         field="body.response_format.json_schema.schema.$ref", line=1, content_type="application/jsonl"),
    Case("openai line is a string", _jsonl(_line("a"), '"just a string"'), 422, line=2,
         content_type="application/jsonl"),
    Case("bad line accepted with strict=false", _jsonl(_line("a"), _line("b", n=3)), 202,
         content_type="application/jsonl", query={"strict": "false"}),
]
