"""Regressions of a run against a baseline run of the same suite: cases that went from pass to fail,
and metrics that dropped by more than the suite's `regression.max_drop`, or fell below their
assertion's threshold having been at or above it. `llm-jobs eval run` exits non-zero when there is
any (README, "Evaluation suites": the CI recipe).
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel

from shared.evals.scoring import RunScores


class MetricDrop(BaseModel):
    metric: str
    baseline: float
    now: float
    why: str


class Regressions(BaseModel):
    #: case ids that passed in the baseline and fail now
    cases: list[str]
    metrics: list[MetricDrop]

    @property
    def any(self) -> bool:
        return bool(self.cases or self.metrics)


def _higher_is_better(scores: RunScores) -> dict[str, tuple[float | None, float | None]]:
    """name -> (value, threshold) of every metric where higher is better."""
    out: dict[str, tuple[float | None, float | None]] = {"pass rate": (scores.pass_rate, None)}
    for name, m in scores.metrics.items():
        out[f"{name} pass rate"] = (m.pass_rate, None)
        if m.type in {"rouge_l", "chrf", "llm_rubric"}:  # scores that are the measure itself, 0..1
            out[f"{name} mean"] = (m.mean_score, m.threshold)
        elif m.type == "levenshtein":
            out[f"{name} mean score"] = (m.mean_score, None)
    if scores.agreement is not None:
        a = scores.agreement
        out |= {"exact agreement": (a.exact, None), "agreement within 1": (a.within_1, None),
                "quadratic weighted kappa": (a.qwk, None)}
    return out


def compare(now: RunScores, now_cases: Mapping[str, bool], baseline: RunScores, baseline_cases: Mapping[str, bool],
            max_drop: float) -> Regressions:
    """`*_cases`: case id -> passed. Cases not in both runs are not compared."""
    cases = sorted(c for c, passed in baseline_cases.items() if passed and now_cases.get(c) is False)
    drops: list[MetricDrop] = []
    before, after = _higher_is_better(baseline), _higher_is_better(now)
    for name, (was, bound) in before.items():
        if name not in after or was is None or after[name][0] is None:
            continue
        is_now = after[name][0]
        assert is_now is not None
        if was - is_now > max_drop + 1e-12:
            drops.append(MetricDrop(metric=name, baseline=was, now=is_now,
                                    why=f"dropped by {was - is_now:.3f} (more than {max_drop:g})"))
        elif bound is not None and was >= bound > is_now:
            drops.append(MetricDrop(metric=name, baseline=was, now=is_now, why=f"fell below its threshold {bound:g}"))
    if now.agreement is not None and baseline.agreement is not None:
        was_mae, mae = baseline.agreement.mae, now.agreement.mae
        span = max(now.agreement.labels) - min(now.agreement.labels) if now.agreement.labels else 1
        if was_mae is not None and mae is not None and mae - was_mae > max_drop * max(span, 1) + 1e-12:
            drops.append(MetricDrop(metric="MAE", baseline=was_mae, now=mae,
                                    why=f"rose by {mae - was_mae:.3f} (more than {max_drop:g} of the label range)"))
    return Regressions(cases=cases, metrics=drops)
