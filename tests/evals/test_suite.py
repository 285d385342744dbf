"""The suite format (shared/evals/suite.py): what a good suite becomes, and how a bad one is refused."""

from __future__ import annotations

import json

import pytest
import yaml

from shared.contracts.errors import InputError
from shared.evals.suite import MAX_SUITE_BYTES, parse_suite

GOOD = """\
id: grading-mini
template: "Avalua: {{ essay }}"
sampling: {temperature: 0.1, max_tokens: 50}
response_format:
  type: json_schema
  json_schema:
    name: nota
    schema: {type: object, properties: {nota: {type: integer}}, required: [nota]}
assert:
  - type: is-json
grading: {output: $.nota, labels: [0, 1, 2, 3, 4, 5]}
cases:
  - id: e1
    fields: {essay: "El meu barri és tranquil."}
    expected: {nota: 3, feedback: "Bona."}
    assert:
      - {type: rouge_l, path: $.feedback, threshold: 0.2, weight: 2}
  - id: e2
    prompt: "Digues hola"
    assert:
      - {type: icontains, value: hola}
"""


def issues(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(InputError) as e:
        parse_suite(text)
    return [(i.line, i.field, i.message) for i in e.value.issues]


def test_a_good_suite_becomes_a_job_with_one_item_per_case():
    suite = parse_suite(GOOD)
    assert suite.assert_[0].type == "is_json"  # promptfoo's hyphens read as underscores
    job = suite.job("run-1", model="m")
    assert [i.custom_id for i in job.items] == ["e1", "e2"]
    assert job.model == "m" and job.template == "Avalua: {{ essay }}" and job.sampling.max_tokens == 50
    assert [a.type for a in suite.assertions(suite.cases[0])] == ["is_json", "rouge_l"]


def test_the_version_is_the_content_however_it_is_written():
    suite = parse_suite(GOOD)
    as_json = json.dumps(yaml.safe_load(GOOD), indent=1, sort_keys=True)
    assert parse_suite(as_json).version() == suite.version()
    assert parse_suite(GOOD.replace("threshold: 0.2", "threshold: 0.3")).version() != suite.version()


def test_errors_name_the_case_the_field_and_the_line():
    bad = GOOD.replace("{type: rouge_l, path: $.feedback, threshold: 0.2, weight: 2}",
                       "{type: rouge_x, path: $.feedback}")
    [(line, field, message)] = issues(bad)
    assert line == 17 and field == "cases.0.assert.0.type"
    assert message.startswith("case 'e1': unknown assertion type 'rouge_x'")


def test_every_later_problem_is_reported_at_once():
    bad = GOOD.replace("threshold: 0.2", "threshold: 1.5").replace("value: hola", "value: '(unclosed'").replace(
        "type: icontains", "type: regex").replace("id: e2", "id: e1").replace("$.nota, labels", "'$.nota[', labels")
    found = issues(bad)
    fields = {f for _, f, _ in found}
    assert {"cases.0.assert.0.threshold", "cases.1.assert.0.value", "cases.1.id", "grading.output"} <= fields, found
    assert all(line is not None for line, _, _ in found)


@pytest.mark.parametrize(("change", "field"), [
    (("{type: icontains, value: hola}", "{type: latency_ms}"), "cases.1.assert.0.threshold"),
    (("{type: icontains, value: hola}", "{type: not_rouge_l, value: x}"), "cases.1.assert.0.type"),
    (("{type: icontains, value: hola}", "{type: json_path}"), "cases.1.assert.0.path"),
    (("{type: icontains, value: hola}", "{type: contains_any, value: x}"), "cases.1.assert.0.value"),
    (("prompt: \"Digues hola\"", "prompt: x\n    messages: [{role: user, content: y}]"), "cases.1"),
    (("{type: integer}", "{type: integr}"), "response_format.json_schema.schema"),
    (("Avalua: {{ essay }}", "Avalua: {{ essay"), "template"),
])
def test_each_kind_of_problem_names_its_field(change, field):
    found = issues(GOOD.replace(*change))
    assert any(f == field or f.startswith(field + ".") for _, f, _ in found), found


def test_a_case_whose_template_field_is_missing_is_named():
    found = issues(GOOD.replace('fields: {essay: "El meu barri és tranquil."}', "fields: {other: 1}"))
    assert any(f.startswith("cases.0") for _, f, _ in found), found


def test_hostile_files_are_refused_with_a_reason():
    laughs = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\nid: s\ncases: []\n"
    [(line, _, message)] = issues(laughs)
    assert "aliases" in message and line == 2
    assert "not valid YAML" in issues("id: [unclosed\n")[0][2]
    assert "mapping" in issues("- just\n- a list\n")[0][2]
    assert "over" in issues("#" * (MAX_SUITE_BYTES + 1))[0][2]
    assert "empty" in issues("")[0][2]
    # control characters (the API's fuzzing sent a NUL) and nesting past the parser's depth
    assert "unacceptable character #x0000" in issues("\x00")[0][2]
    assert "nested too deeply" in issues("[" * 5000)[0][2]
    assert "nested too deeply" in issues("{a: " * 3000)[0][2]
    # a remote $ref would make the worker fetch a URL
    remote = GOOD.replace("{type: integer}", "{$ref: 'https://example.com/x.json'}")
    assert any("response_format" in f for _, f, _ in issues(remote))
