"""Grading agreement: numeric labels from the model (a `nota` 0-5) against a teacher's.

- exact agreement and agreement within 1, over every case: a case the model gave no label (its
  output was not JSON, or had no such field) counts as a disagreement;
- MAE and quadratic weighted kappa over the cases that have both labels (`coverage` says how many).

Kappa is Cohen's, weighted by the squared distance between labels:
    kappa = 1 - sum(w * observed) / sum(w * expected),  w[i][j] = (i - j)^2 / (k - 1)^2
where `expected` is the outer product of the two raters' label counts, scaled to the same total.
The tests check it against scikit-learn's `cohen_kappa_score(weights="quadratic")`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel


class Agreement(BaseModel):
    cases: int
    #: cases with both labels
    labelled: int
    coverage: float
    exact: float
    within_1: float
    mae: float | None
    qwk: float | None
    #: confusion[i][j]: expected label labels[i], the model's labels[j]
    labels: list[int]
    confusion: list[list[int]]


def quadratic_kappa(expected: Sequence[int], got: Sequence[int], labels: Sequence[int]) -> float | None:
    """Quadratic weighted kappa of two raters over `labels` (in order); None with fewer than two cases,
    or when the chance disagreement is nil (both raters gave one same label throughout)."""
    k = len(labels)
    if len(expected) < 2 or k < 2:
        return None
    at = {label: i for i, label in enumerate(labels)}
    observed = [[0.0] * k for _ in range(k)]
    for e, g in zip(expected, got, strict=True):
        observed[at[e]][at[g]] += 1
    n = float(len(expected))
    rows = [sum(r) for r in observed]
    cols = [sum(observed[i][j] for i in range(k)) for j in range(k)]
    num = den = 0.0
    for i in range(k):
        for j in range(k):
            w = (i - j) ** 2 / (k - 1) ** 2
            num += w * observed[i][j]
            den += w * rows[i] * cols[j] / n
    return None if den == 0 else 1.0 - num / den


def agreement(pairs: Sequence[tuple[float | None, float | None]], labels: Sequence[int] | None = None) -> Agreement:
    """`pairs`: (expected, the model's) per case; either may be None (no label)."""
    both = [(round(e), round(g)) for e, g in pairs if e is not None and g is not None]
    seen = sorted({x for pair in both for x in pair} | set(labels or []))
    if labels is not None:
        # a label outside the scale (a 7 on a 0-5 scale) is not a label: the case counts as unlabelled
        both = [(e, g) for e, g in both if e in set(labels) and g in set(labels)]
        seen = list(labels)
    n = len(pairs)
    exact = sum(e == g for e, g in both)
    near = sum(abs(e - g) <= 1 for e, g in both)
    at = {label: i for i, label in enumerate(seen)}
    confusion = [[0] * len(seen) for _ in seen]
    for e, g in both:
        confusion[at[e]][at[g]] += 1
    return Agreement(
        cases=n, labelled=len(both), coverage=len(both) / n if n else 0.0,
        exact=exact / n if n else 0.0, within_1=near / n if n else 0.0,
        mae=sum(abs(e - g) for e, g in both) / len(both) if both else None,
        qwk=quadratic_kappa([e for e, _ in both], [g for _, g in both], seen) if both else None,
        labels=seen, confusion=confusion)
