"""A case's score from its result, and a run's summary from its cases' scores.

A case passes when every assertion passes; its score is the weighted mean of their scores. A case
with no assertions passes when its item did not fail. The summary has the pass rate, each
assertion's pass rate and mean score (by its metric name), and grading agreement where the suite
asks for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel

from shared.contracts.models import Result, ResultStatus
from shared.evals import text as metrics
from shared.evals.agreement import Agreement, agreement
from shared.evals.checks import (
    _MISSING,
    DEFAULT_THRESHOLD,
    OVERLAP,
    Facts,
    Outcome,
    Output,
    _find,
    check,
    overlap_texts,
    trusted,
)
from shared.evals.suite import Case, Suite


class CaseScore(BaseModel):
    case_id: str
    passed: bool
    score: float
    outcomes: list[Outcome]
    #: the model's grading label and the expected one (the suite's `grading`)
    label: float | None = None
    expected_label: float | None = None
    #: the item's error, when it failed
    error: str | None = None


_CASE_SCORE_FIELDS = set(CaseScore.model_fields)


class MetricStats(BaseModel):
    #: the assertion type it reports (`rouge_l`, `not_icontains`, ...)
    type: str
    n: int
    passed: int
    pass_rate: float
    mean_score: float
    #: the mean of what was measured (ROUGE-L, distance, latency, perplexity), where there is a number
    mean_value: float | None = None
    #: the bound its assertions set, where they all set the same one
    threshold: float | None = None


class RunScores(BaseModel):
    cases: int
    passed: int
    pass_rate: float
    mean_score: float
    metrics: dict[str, MetricStats]
    agreement: Agreement | None = None


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return None
    return None


def labels_of(suite: Suite, case: Case, out: Output) -> tuple[float | None, float | None]:
    """(the model's label, the expected one), each None where there is none."""
    g = suite.grading
    if g is None:
        return None, None
    got = _find(g.output, out.json)
    expected: Any = case.expected
    if isinstance(expected, dict | list):
        expected = _find(g.expected or g.output, expected)
    return (None if got is _MISSING else _number(got)), (None if expected is _MISSING else _number(expected))


def score_case(suite: Suite, case: Case, result: Result, facts: Facts | None = None) -> CaseScore:
    """A case's score from its result (`score_cases` of one)."""
    return score_cases(suite, [(case, result, facts)])[0]


def _overlaps(suite: Suite, items: Sequence[tuple[Case, Output]]) -> dict[tuple[int, int], float]:
    """The ROUGE-L and chrF of the items' `rouge_l` and `chrf` assertions, by (item, assertion index): chrF
    counted for all of them at once."""
    todo: dict[str, list[tuple[tuple[int, int], tuple[str, str]]]] = {"rouge_l": [], "chrf": []}
    for k, (case, out) in enumerate(items):
        for i, a in enumerate(suite.assertions(case)):
            if a.type in OVERLAP and (texts := overlap_texts(a, out, case.expected)) is not None:
                todo[a.type].append(((k, i), texts))
    rouge = [metrics.rouge_l(*texts) for _, texts in todo["rouge_l"]]
    chrf = metrics.chrf_many([texts for _, texts in todo["chrf"]])
    return dict(zip([at for at, _ in todo["rouge_l"] + todo["chrf"]], rouge + chrf, strict=True))


def score_cases(suite: Suite, items: Sequence[tuple[Case, Result, Facts | None]]) -> list[CaseScore]:
    """Each (case, result, facts)'s score (a stored chunk's, say), with the batch's ROUGE-L and chrF
    measured together (shared/evals/chrf.py counts the chrF of many pairs in one pass)."""
    outs = [Output.of(result) for _, result, _ in items]
    measured = _overlaps(suite, [(case, out) for (case, _, _), out in zip(items, outs, strict=True)])
    return [_score(suite, k, case, out, result, facts or Facts(), measured)
            for k, ((case, result, facts), out) in enumerate(zip(items, outs, strict=True))]


def _score(suite: Suite, k: int, case: Case, out: Output, result: Result, facts: Facts,
           measured: dict[tuple[int, int], float]) -> CaseScore:
    outcomes = [check(a, i, out, case.expected, facts, suite.response_format, measured.get((k, i)))
                for i, a in enumerate(suite.assertions(case))]
    weight = sum(o.weight for o in outcomes)
    if outcomes:
        passed = all(o.passed for o in outcomes)
        score = sum(o.score * o.weight for o in outcomes) / weight if weight else float(passed)
    else:
        passed = result.status == ResultStatus.ok
        score = float(passed)
    label, expected = labels_of(suite, case, out)
    return trusted(CaseScore, _CASE_SCORE_FIELDS, {  # the values have the fields' types: checks.py `trusted`
        "case_id": case.id, "passed": passed, "score": round(score, 6), "outcomes": outcomes, "label": label,
        "expected_label": expected, "error": out.error})


def summarize(suite: Suite, scores: Iterable[CaseScore]) -> RunScores:
    scores = list(scores)
    by_metric: dict[str, list[Outcome]] = {}
    for s in scores:
        for o in s.outcomes:
            by_metric.setdefault(o.metric, []).append(o)
    bounds: dict[str, set[float | None]] = {}
    for case in suite.cases:
        for a in suite.assertions(case):
            bounds.setdefault(a.name, set()).add(
                a.threshold if a.threshold is not None else DEFAULT_THRESHOLD.get(a.type))
    metrics = {}
    for name, outs in sorted(by_metric.items()):
        values = [o.value for o in outs if o.value is not None]
        bound = bounds.get(name, {None})
        metrics[name] = MetricStats(
            type=outs[0].type, n=len(outs), passed=sum(o.passed for o in outs),
            pass_rate=sum(o.passed for o in outs) / len(outs),
            mean_score=sum(o.score for o in outs) / len(outs),
            mean_value=sum(values) / len(values) if values else None,
            threshold=next(iter(bound)) if len(bound) == 1 else None)
    n = len(scores)
    grading = None
    if suite.grading is not None:
        grading = agreement([(s.expected_label, s.label) for s in scores], suite.grading.labels)
    return RunScores(cases=n, passed=sum(s.passed for s in scores), pass_rate=sum(s.passed for s in scores) / n
                     if n else 0.0, mean_score=sum(s.score for s in scores) / n if n else 0.0, metrics=metrics,
                     agreement=grading)
