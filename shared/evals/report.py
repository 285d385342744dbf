"""An eval run's report (`llm-jobs eval report`): one self-contained HTML file.

It shows the run (suite, version, model, revision, times, status, pass rate, baseline and
regressions), the suite's pass rate over its runs as an SVG line chart, a bar per assertion, the
confusion matrix of graded labels with the agreement figures, and the failed cases with their
outputs. Pure: records come in, a string goes out. The only file it reads is its own template,
`report.html.j2`, beside this module (package data).

Everything from the store is hostile: outputs, reasons, case ids, model names. The template
escapes all of it (Jinja2, autoescape on), and the page loads nothing: no scripts, fonts, images or
links, and a Content-Security-Policy of `default-src 'none'` tells the browser so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources

import jinja2
from pydantic import ValidationError

from shared.contracts.models import JobStatus
from shared.evals.records import CaseResult, RunRecord
from shared.evals.regress import Regressions
from shared.evals.report_chart import Chart, pass_rate_chart
from shared.evals.scoring import CaseScore, RunScores, summarize
from shared.evals.suite import Suite

#: the characters of an output the failed cases' table shows
OUTPUT_CHARS = 500
#: the failed cases the table lists (the rest are counted)
MAX_FAILED = 1000
#: the assertion types whose score is what they measure (0..1), so that their threshold bounds the score
SCORE_BOUNDED = {"rouge_l", "chrf", "llm_rubric"}


@dataclass(frozen=True)
class Bar:
    """One assertion's (metric's) figures across the run."""

    name: str
    type: str
    n: int
    passed: int
    pass_rate: float
    mean_score: float
    mean_value: float | None
    threshold: float | None
    #: the threshold, where it bounds the score itself (0..1): drawn on the score's bar
    score_threshold: float | None


@dataclass(frozen=True)
class Confusion:
    """counts[i][j]: cases with the teacher's label labels[i] and the model's labels[j]; none[i]: the model
    gave no label (or one off the scale); `unrated`: cases with no teacher's label on the scale."""

    labels: list[int]
    counts: list[list[int]]
    none: list[int]
    unrated: int

    @property
    def most(self) -> int:
        return max([*(c for row in self.counts for c in row), *self.none, 1])


@dataclass(frozen=True)
class Failure:
    metric: str
    type: str
    reason: str


@dataclass(frozen=True)
class FailedCase:
    case_id: str
    failures: list[Failure]
    error: str | None
    output: str | None
    #: characters of the output left out
    cut: int
    label: float | None
    expected_label: float | None


def _rounded(v: float | None) -> int | None:
    """A label as the scale has it (None for none, or for NaN and infinities)."""
    return round(v) if v is not None and math.isfinite(v) else None


def run_scores(run: RunRecord, results: Sequence[CaseResult], suite: Suite | None) -> tuple[RunScores | None, bool]:
    """(the run's scores, whether they are provisional): those stored at its end, or, for a run that has
    none yet, a summary of the case results stored so far (with the suite to summarize them by)."""
    if run.scores is not None:
        try:
            return RunScores.model_validate(run.scores), False
        except ValidationError:
            pass
    if suite is None or not results:
        return None, True
    scores = []
    for r in results:
        try:
            scores.append(CaseScore.model_validate({"case_id": r.case_id, "passed": r.passed, "score": r.score,
                                                    "outcomes": r.outcomes, "label": r.label,
                                                    "expected_label": r.expected_label, "error": r.error}))
        except ValidationError:
            continue
    return summarize(suite, scores), True


def bars(scores: RunScores | None) -> list[Bar]:
    if scores is None:
        return []
    return [Bar(name=name, type=m.type, n=m.n, passed=m.passed, pass_rate=m.pass_rate, mean_score=m.mean_score,
                mean_value=m.mean_value, threshold=m.threshold,
                score_threshold=m.threshold if m.type in SCORE_BOUNDED and m.threshold is not None
                and 0 <= m.threshold <= 1 else None) for name, m in scores.metrics.items()]


def grading_labels(results: Sequence[CaseResult], suite: Suite | None,
                   labels: Sequence[int] | None = None) -> list[int] | None:
    """The scale the confusion matrix uses: `labels`, else the suite's grading labels, else the labels seen;
    None when there is nothing to grade (the suite has no `grading`, or no case has a label)."""
    if labels is not None:
        return list(labels)
    if suite is not None:
        if suite.grading is None:
            return None
        if suite.grading.labels:
            return list(suite.grading.labels)
    seen = {_rounded(v) for r in results for v in (r.expected_label, r.label)}
    return sorted(v for v in seen if v is not None) or None


def confusion(results: Sequence[CaseResult], labels: Sequence[int]) -> Confusion:
    at = {label: i for i, label in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    none = [0] * len(labels)
    unrated = 0
    for r in results:
        expected, got = _rounded(r.expected_label), _rounded(r.label)
        row = None if expected is None else at.get(expected)
        if row is None:
            unrated += 1
            continue
        col = None if got is None else at.get(got)
        if col is None:
            none[row] += 1
        else:
            counts[row][col] += 1
    return Confusion(labels=list(labels), counts=counts, none=none, unrated=unrated)


def failed_cases(results: Sequence[CaseResult], limit: int = MAX_FAILED) -> list[FailedCase]:
    out = []
    for r in results:
        if r.passed:
            continue
        if len(out) == limit:
            break
        failures = [Failure(metric=str(o.get("metric") or o.get("type") or "?"), type=str(o.get("type") or ""),
                            reason=str(o.get("reason") or "")) for o in r.outcomes
                    if isinstance(o, dict) and not o.get("passed")]
        text = r.output
        out.append(FailedCase(case_id=r.case_id, failures=failures, error=r.error,
                              output=None if text is None else text[:OUTPUT_CHARS],
                              cut=0 if text is None else max(0, len(text) - OUTPUT_CHARS),
                              label=r.label, expected_label=r.expected_label))
    return out


def _regressions(run: RunRecord) -> Regressions | None:
    try:
        return Regressions.model_validate(run.regressions) if run.regressions is not None else None
    except ValidationError:
        return None


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.1%}"


def _num(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _when(v: datetime | None) -> str:
    return "—" if v is None else v.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _label(v: float | None) -> str:
    return "none" if v is None else f"{v:g}"


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters |= {"pct": _pct, "num": _num, "when": _when, "label": _label}
    return env.from_string(resources.files(__package__).joinpath("report.html.j2").read_text(encoding="utf-8"))


def render_report(run: RunRecord, history: Sequence[RunRecord], results: Sequence[CaseResult],
                  suite: Suite | None = None, *, labels: Sequence[int] | None = None,
                  generated_at: datetime | None = None) -> str:
    """The report's HTML. `history`: the suite's earlier runs, oldest first (the run itself is added as the
    last point); `results`: the run's case results; `suite`: the version it ran (its grading labels and
    thresholds), when known; `labels`: the grading scale, to use instead of the suite's."""
    scores, provisional = run_scores(run, results, suite)
    earlier = [r for r in history if r.id != run.id]
    chart: Chart = pass_rate_chart(earlier, run, None if scores is None else scores.pass_rate)
    scale = grading_labels(results, suite, labels)
    finished = run.scores is not None and run.status not in (JobStatus.queued, JobStatus.running)
    passed = sum(r.passed for r in results)
    failed = failed_cases(results)
    return _template().render(
        run=run, suite=suite, scores=scores, provisional=provisional, finished=finished,
        cases_total=len(suite.cases) if suite is not None else None, results=len(results), passed=passed,
        pass_rate=scores.pass_rate if scores is not None else (passed / len(results) if results else None),
        regressions=_regressions(run), settings=json.dumps(run.settings, ensure_ascii=False, sort_keys=True),
        chart=chart, bars=bars(scores), matrix=None if scale is None else confusion(results, scale),
        agreement=scores.agreement if scores is not None else None, failed=failed,
        failed_total=len(results) - passed, output_chars=OUTPUT_CHARS, generated_at=generated_at)
