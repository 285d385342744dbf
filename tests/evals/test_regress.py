"""Regressions against a crafted baseline (shared/evals/regress.py)."""

from __future__ import annotations

from shared.contracts.models import Result
from shared.evals.regress import compare
from shared.evals.scoring import score_case, summarize
from shared.evals.suite import parse_suite

SUITE = parse_suite("""\
id: reg
regression: {max_drop: 0.1}
grading: {output: $.nota, labels: [0, 1, 2, 3, 4, 5]}
cases:
""" + "".join(f"""\
  - id: c{i}
    prompt: p{i}
    expected: {{nota: {i % 6}, feedback: "la resposta és bona i clara"}}
    assert:
      - {{type: rouge_l, path: $.feedback, threshold: 0.5}}
""" for i in range(10)))


def run(outputs: dict[str, str]):
    scores = [score_case(SUITE, case, Result(custom_id=case.id, status="ok", text=outputs[case.id]))
              for case in SUITE.cases]
    return summarize(SUITE, scores), {s.case_id: s.passed for s in scores}


def good(i: int, feedback: str = "la resposta és bona i clara", nota: int | None = None) -> str:
    return f'{{"nota": {i % 6 if nota is None else nota}, "feedback": "{feedback}"}}'


def test_the_same_run_has_no_regression():
    base = run({f"c{i}": good(i) for i in range(10)})
    assert not compare(*base, *base, max_drop=0.1).any


def test_a_case_from_pass_to_fail_and_the_metrics_it_drags_down():
    base = run({f"c{i}": good(i) for i in range(10)})
    now = run({f"c{i}": good(i, "res a veure" if i == 3 else "la resposta és bona i clara") for i in range(10)})
    r = compare(*now, *base, max_drop=0.1)
    assert r.cases == ["c3"]
    # one case of ten failing: the pass rate drops by exactly 0.1, not more than max_drop
    assert {m.metric for m in r.metrics} == set()
    now2 = run({f"c{i}": good(i, "res a veure" if i < 2 else "la resposta és bona i clara") for i in range(10)})
    r2 = compare(*now2, *base, max_drop=0.1)
    assert r2.cases == ["c0", "c1"]
    assert {"pass rate", "rouge_l pass rate", "rouge_l mean"} <= {m.metric for m in r2.metrics}


def test_a_mean_that_falls_below_its_threshold_regresses_even_within_max_drop():
    base = run({f"c{i}": good(i, "la resposta és") for i in range(10)})  # ROUGE-L 2 * 1 * 1/2 / 1.5 = 2/3
    now = run({f"c{i}": good(i, "la") for i in range(10)})  # 2 * 1 * 1/6 / (7/6) = 2/7
    assert base[0].metrics["rouge_l"].mean_score > 0.5 > now[0].metrics["rouge_l"].mean_score
    r = compare(*now, *base, max_drop=0.5)  # a drop of 0.38: within max_drop
    assert [m.why for m in r.metrics if m.metric == "rouge_l mean"] == ["fell below its threshold 0.5"]


def test_grading_agreement_and_kappa_regress_when_labels_drift():
    base = run({f"c{i}": good(i) for i in range(10)})
    now = run({f"c{i}": good(i, nota=(i + 2) % 6) for i in range(10)})
    names = {m.metric for m in compare(*now, *base, max_drop=0.1).metrics}
    assert {"exact agreement", "agreement within 1", "quadratic weighted kappa", "MAE"} <= names
