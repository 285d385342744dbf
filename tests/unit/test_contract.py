"""The job contract and its validation: every error names the line or item and the field."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from shared.contracts.errors import ErrorCode, InputError, ItemFailure
from shared.contracts.inputs import parse_job_text
from shared.contracts.models import Item, Job, ResponseFormat, Sampling
from shared.contracts.prepare import Limits, RequestBuilder, check_output

SERVED = frozenset({"SmolLM2-135M-Instruct"})
SCHEMA = {"type": "object", "properties": {"nota": {"type": "integer", "minimum": 0, "maximum": 5},
                                           "feedback": {"type": "string"}},
          "required": ["nota", "feedback"], "additionalProperties": False}


def jsonl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def chat_line(cid: str, model: str = "SmolLM2-135M-Instruct", **body) -> dict:
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": "hi"}], **body}}


# ## Models


def test_item_needs_exactly_one_input():
    with pytest.raises(ValidationError, match="exactly one of prompt, messages, fields or body"):
        Item(custom_id="a", prompt="x", messages=[{"role": "user", "content": "y"}])
    with pytest.raises(ValidationError, match="found: none"):
        Item(custom_id="a")


def test_sampling_bounds_and_stop_string():
    assert Sampling(stop="END").stop == ["END"]
    with pytest.raises(ValidationError):
        Sampling(temperature=3)
    with pytest.raises(ValidationError):
        Sampling(max_tokens=0)


def test_response_format_shapes():
    rf = ResponseFormat.model_validate({"type": "json_schema", "json_schema": {"name": "g", "schema": SCHEMA}})
    assert rf.json_schema.schema_ == SCHEMA
    with pytest.raises(ValidationError, match="needs a 'json_schema'"):
        ResponseFormat(type="json_schema")


def test_default_max_tokens_is_sane_and_capped():
    b = RequestBuilder(Job(items=[]), Limits(default_max_tokens=512, max_tokens_cap=1000))
    assert b.build(Item(custom_id="a", prompt="x")).sampling.max_tokens == 512
    with pytest.raises(ItemFailure) as e:
        b.build(Item(custom_id="a", prompt="x", sampling=Sampling(max_tokens=5000)))
    assert e.value.field == "sampling.max_tokens" and "cap of 1000" in e.value.message


def test_item_sampling_overrides_job_sampling():
    b = RequestBuilder(Job(items=[], sampling=Sampling(temperature=0.1, seed=3)), Limits())
    r = b.build(Item(custom_id="a", prompt="x", sampling=Sampling(temperature=0.9)))
    assert (r.sampling.temperature, r.sampling.seed) == (0.9, 3)


# ## Form (a): a Job document


def test_job_document_with_template_and_system():
    doc = {"id": "j1", "template": "Grade: {{ respuesta }} ({{ item.custom_id }})", "system": "Be strict.",
           "items": [{"custom_id": "a", "fields": {"respuesta": "hola"}}]}
    job = parse_job_text(json.dumps(doc))
    req = RequestBuilder(job, Limits()).build(job.items[0])
    assert req.messages == ({"role": "system", "content": "Be strict."},
                            {"role": "user", "content": "Grade: hola (a)"})


def test_template_missing_field_rejects_that_item_only():
    doc = {"template": "{{ respuesta }}", "items": [{"custom_id": "a", "fields": {"respuesta": "x"}},
                                                    {"custom_id": "b", "fields": {"other": "y"}}]}
    job = parse_job_text(json.dumps(doc))
    assert [i.custom_id for i in job.items] == ["a"]
    (r,) = job.rejected
    assert (r.custom_id, r.index, r.field) == ("b", 1, "fields")
    assert "respuesta" in r.message and r.describe().startswith("item 1, field 'fields'")


def test_job_level_errors_name_the_field():
    cases = {
        "template": {"template": "{% if %}", "items": [{"prompt": "x"}]},
        "response_format.json_schema.schema": {"response_format": {"type": "json_schema", "json_schema": {
            "schema": {"type": "nonsense"}}}, "items": [{"prompt": "x"}]},
        "sampling.max_tokens": {"sampling": {"max_tokens": 10**6}, "items": [{"prompt": "x"}]},
        "chunk_size": {"chunk_size": 0, "items": [{"prompt": "x"}]},
        "items": {"items": []},
        "model": {"model": "gpt-4o", "items": [{"prompt": "x"}]},
    }
    for field, doc in cases.items():
        with pytest.raises(InputError) as e:
            parse_job_text(json.dumps(doc), served_models=SERVED)
        assert e.value.issues[0].field == field, (field, e.value.issues)


def test_too_many_items_is_a_job_error():
    with pytest.raises(InputError, match="over the limit of 2"):
        parse_job_text(jsonl({"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}), limits=Limits(max_items=2))


def test_duplicate_custom_ids_name_both_lines():
    with pytest.raises(InputError) as e:
        parse_job_text(jsonl({"custom_id": "x", "prompt": "a"}, {"custom_id": "x", "prompt": "b"}))
    assert str(e.value.issues[0]) == "line 2, field 'custom_id': custom_id 'x' repeats line 1"


def test_duplicate_custom_ids_among_earlier_rejections_are_a_job_error():
    """The SDK's `rejected` list is input too: two rejections with one custom_id would collide in the
    store (found by the API fuzz test as a 503), so they are refused up front, naming the entry."""
    gone = {"index": 0, "message": "bad"}
    doc = {"items": [{"prompt": "a"}], "rejected": [{**gone, "custom_id": "r"}, {**gone, "custom_id": "r", "index": 4}]}
    with pytest.raises(InputError) as e:
        parse_job_text(json.dumps(doc))
    assert e.value.issues[0].field == "rejected.1.custom_id" and "repeats rejected item 0" in e.value.issues[0].message


# ## Form (b): JSONL items with options from the CLI


def test_jsonl_items_take_options_and_default_ids():
    job = parse_job_text(jsonl({"prompt": "a"}, "", {"fields": {"n": 1}}),
                         options={"template": "n={{ n }}", "chunk_size": 3})
    assert [i.custom_id for i in job.items] == ["item-0", "item-1"]
    assert job.chunk_size == 3 and job.result_format == "ours"


def test_bad_lines_become_rejections_with_line_and_field():
    text = jsonl({"custom_id": "ok", "prompt": "fine"}, "{not json", {"custom_id": "t", "prompt": "x",
                 "sampling": {"temperature": 9}}, {"custom_id": "e", "prompt": "x", "colour": "red"})
    job = parse_job_text(text)
    assert [i.custom_id for i in job.items] == ["ok"]
    got = {(r.line, r.field) for r in job.rejected}
    assert got == {(2, ""), (3, "sampling.temperature"), (4, "colour")}
    assert all(r.code == ErrorCode.invalid_item for r in job.rejected)


def test_prompt_length_limit_is_per_item():
    job = parse_job_text(jsonl({"prompt": "x" * 50}, {"prompt": "short"}), limits=Limits(max_prompt_chars=20))
    (r,) = job.rejected
    assert (r.line, r.field) == (1, "prompt") and "over the limit of 20" in r.message


def test_strict_mode_refuses_the_whole_job():
    with pytest.raises(InputError) as e:
        parse_job_text(jsonl({"prompt": "a"}, {"prompt": 3}), strict=True)
    assert e.value.issues[0].line == 2 and e.value.issues[0].field == "prompt"


# ## Form (c): OpenAI Batch lines


def test_openai_lines_default_to_openai_output_and_map_sampling():
    text = jsonl(chat_line("a", max_completion_tokens=30, temperature=0, stop="\n",
                           response_format={"type": "json_object"}),
                 {"custom_id": "b", "method": "POST", "url": "/v1/completions",
                  "body": {"model": "SmolLM2-135M-Instruct", "prompt": ["Once"], "max_tokens": 5}})
    job = parse_job_text(text, served_models=SERVED)
    assert job.result_format == "openai" and not job.rejected
    b = RequestBuilder(job, Limits(), SERVED)
    chat, completion = (b.build(i) for i in job.items)
    assert (chat.sampling.max_tokens, chat.sampling.temperature, chat.sampling.stop) == (30, 0, ["\n"])
    assert chat.schema == {} and chat.validator is not None  # json_object
    assert completion.prompt == "Once" and completion.messages is None


def test_unknown_model_is_a_per_line_404_unless_overridden():
    text = jsonl(chat_line("a"), chat_line("b", model="gpt-4o-mini"))
    job = parse_job_text(text, served_models=SERVED)
    (r,) = job.rejected
    assert (r.custom_id, r.line, r.field, r.code) == ("b", 2, "body.model", ErrorCode.model_not_found)
    assert not parse_job_text(text, served_models=SERVED, any_model=True).rejected


def test_unsupported_openai_fields_are_named():
    job = parse_job_text(jsonl(chat_line("a", tools=[]), chat_line("b", n=2), chat_line("c", stream=True),
                               chat_line("d", temperature=7)), served_models=SERVED)
    assert [(r.custom_id, r.field) for r in job.rejected] == [
        ("a", "body.tools"), ("b", "body.n"), ("c", "body.stream"), ("d", "body.temperature")]


# ## Structured output checks


def test_check_output_parses_or_reports_invalid_output():
    job = parse_job_text(json.dumps({"response_format": {"type": "json_schema", "json_schema": {
        "name": "g", "schema": SCHEMA}}, "items": [{"custom_id": "a", "prompt": "x"}]}))
    req = RequestBuilder(job, Limits()).build(job.items[0])
    assert check_output(req, '{"nota": 4, "feedback": "bé"}') == {"nota": 4, "feedback": "bé"}
    with pytest.raises(ItemFailure) as e:
        check_output(req, '{"nota": 9, "feedback": "x"}')
    assert e.value.code == ErrorCode.invalid_output and "nota" in e.value.message
    with pytest.raises(ItemFailure, match="not valid JSON"):
        check_output(req, '{"nota": 4, "feed')
