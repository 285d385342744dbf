"""Inputs that used to get through to the engine, or be refused for the wrong reason (issue 11, findings 3 and 11)."""

from __future__ import annotations

import json

import pytest

from shared.contracts.errors import InputError
from shared.contracts.inputs import parse_job_document, parse_job_text

SERVED = frozenset({"SmolLM2-135M-Instruct"})


@pytest.mark.parametrize("seed", [-1, 2**63, 10**26])
def test_a_seed_outside_64_bits_is_refused_naming_the_field(seed):
    with pytest.raises(InputError) as e:
        parse_job_document({"items": [{"prompt": "hi"}], "sampling": {"seed": seed}})
    assert [i.field for i in e.value.issues] == ["sampling.seed"]
    line = {"custom_id": "c", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "SmolLM2-135M-Instruct", "seed": seed, "messages": [{"role": "user", "content": "x"}]}}
    job = parse_job_text(json.dumps(line) + "\n", served_models=SERVED)
    assert [r.field for r in job.rejected] == ["body.seed"]


def test_the_largest_64_bit_seed_is_accepted():
    assert parse_job_document({"items": [{"prompt": "hi"}], "sampling": {"seed": 2**63 - 1}}).sampling.seed == 2**63 - 1


def test_an_openai_line_that_names_no_model_runs_on_the_served_one():
    line = {"custom_id": "c", "method": "POST", "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": "hi"}]}}
    job = parse_job_text(json.dumps(line) + "\n", served_models=SERVED)
    assert job.rejected == [] and [i.custom_id for i in job.items] == ["c"]
    other = {**line, "custom_id": "d", "body": {**line["body"], "model": "gpt-4o-mini"}}
    job = parse_job_text(json.dumps(other) + "\n", served_models=SERVED)
    assert [(r.field, r.code) for r in job.rejected] == [("body.model", "model_not_found")]  # a named one still counts
