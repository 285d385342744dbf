"""A batch's scores (shared/evals/scoring.py `score_cases`: its ROUGE-L and chrF measured together, its
outcomes and scores built `trusted`) against each result scored alone, as before batches."""

from __future__ import annotations

import json
import pickle
import random

import pytest

from shared.contracts.models import Result
from shared.evals.checks import Facts, Outcome, Output, check, outcome, trusted
from shared.evals.scoring import CaseScore, labels_of, score_case, score_cases
from shared.evals.suite import parse_suite
from tests.evals.test_chrf import text

SUITE = parse_suite("""\
id: batch
response_format: {type: json_schema, json_schema: {name: n, schema: {type: object, required: [nota, feedback],
  properties: {nota: {type: integer, minimum: 0, maximum: 10}, feedback: {type: string}}}}}
grading: {output: $.nota, labels: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}
assert: [{type: is_json}, {type: json_schema}]
cases:
""" + "".join(f"""\
  - id: c{i}
    prompt: p{i}
    expected: {{nota: {i % 11}, feedback: "la resposta és bona i clara, però cal revisar l'ortografia {i}"}}
    assert:
      - {{type: rouge_l, path: $.feedback, threshold: 0.3}}
      - {{type: chrf, path: $.feedback, threshold: 0.4, weight: 2}}
      - {{type: chrf, value: "la resposta", metric: chrf_fixed}}
      - {{type: icontains, value: "bona"}}
""" for i in range(30)))


def outputs(seed: int) -> list[Result]:
    rng = random.Random(seed)
    out = []
    for case in SUITE.cases:
        fb = rng.choice([case.expected["feedback"], "la resposta és bona", "", "😀 bona", text(rng, 20)])
        doc = json.dumps({"nota": rng.randint(-1, 11), "feedback": fb}, ensure_ascii=False)
        out.append(rng.choice([Result(custom_id=case.id, status="ok", text=doc),
                               Result(custom_id=case.id, status="ok", text=doc),
                               Result(custom_id=case.id, status="ok", text=fb or "no JSON"),
                               Result(custom_id=case.id, status="ok", text='{"nota": 2}'),
                               Result.failure(case.id, "timeout", "over 30 s")]))
    return out


def validated(o: Outcome) -> Outcome:
    return Outcome.model_validate(o.model_dump())


def alone(result: Result) -> CaseScore:
    """A result scored as before batches: each assertion measuring its own overlap, every model validated."""
    case = next(c for c in SUITE.cases if c.id == result.custom_id)
    out = Output.of(result)
    outcomes = [validated(check(a, i, out, case.expected, Facts(), SUITE.response_format))
                for i, a in enumerate(SUITE.assertions(case))]
    weight = sum(o.weight for o in outcomes)
    label, expected = labels_of(SUITE, case, out)
    return CaseScore(case_id=case.id, passed=all(o.passed for o in outcomes),
                     score=round(sum(o.score * o.weight for o in outcomes) / weight, 6), outcomes=outcomes,
                     label=label, expected_label=expected, error=out.error)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_batch_scores_each_result_as_it_is_scored_alone(seed):
    results = outputs(seed)
    by_id = {c.id: c for c in SUITE.cases}
    batch = score_cases(SUITE, [(by_id[r.custom_id], r, None) for r in results])
    before = [alone(r) for r in results]
    assert batch == before
    assert [s.model_dump_json() for s in batch] == [s.model_dump_json() for s in before]
    assert batch == [score_case(SUITE, by_id[r.custom_id], r) for r in results]
    assert score_cases(SUITE, []) == []


def test_a_trusted_outcome_is_the_validated_one():
    kw = {"type": "chrf", "metric": "chrf_fixed", "passed": True, "score": 0.5, "weight": 2.0, "value": 0.5,
          "reason": "chrf 0.500 (at least 0.4)"}
    fast, slow = outcome(**kw), Outcome(**kw)
    assert fast == slow and repr(fast) == repr(slow)
    assert fast.model_dump_json() == slow.model_dump_json() and fast.model_fields_set == slow.model_fields_set
    assert pickle.loads(pickle.dumps(fast)) == slow
    # numbers as validation makes them
    ints = {**kw, "score": 1, "weight": 1, "value": 3, "passed": True}
    assert outcome(**ints).model_dump_json() == Outcome(**ints).model_dump_json() == json.dumps(
        {**ints, "score": 1.0, "weight": 1.0, "value": 3.0}, separators=(",", ":"))
    # setting a field changes that outcome only; the fields set they share still holds every field
    fast.reason = "changed"
    other = outcome(**kw)
    assert other.reason == kw["reason"] and other.model_fields_set == fast.model_fields_set == set(Outcome.model_fields)
    assert fast.model_copy(update={"score": 0.25}).score == 0.25 and fast.score == 0.5


def test_a_trusted_case_score_is_the_validated_one():
    failed = outcome("is_json", "is_json", False, 0.0, 1.0, None, "the output is not JSON")
    values = {"case_id": "c1", "passed": False, "score": 0.25, "outcomes": [failed], "label": 3.0,
              "expected_label": None, "error": None}
    fast, slow = trusted(CaseScore, set(CaseScore.model_fields), dict(values)), CaseScore(**values)
    assert fast == slow and fast.model_dump_json() == slow.model_dump_json()
    assert CaseScore.model_validate(fast.model_dump()) == fast
