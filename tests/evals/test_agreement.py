"""Grading agreement (shared/evals/agreement.py): by hand, and kappa against scikit-learn's."""

from __future__ import annotations

import random

import pytest
from sklearn.metrics import cohen_kappa_score

from shared.evals.agreement import agreement, quadratic_kappa

LABELS = [0, 1, 2, 3, 4, 5]


def test_by_hand():
    # teacher, model: exact 2 of 5; within 1: 4 of 5 (the 1-vs-4 is off by 3); one case has no label
    pairs = [(3, 3), (4, 5), (2, 2), (1, 4), (0, None)]
    a = agreement(pairs, LABELS)
    assert (a.cases, a.labelled, a.coverage) == (5, 4, 0.8)
    assert a.exact == pytest.approx(2 / 5) and a.within_1 == pytest.approx(3 / 5)
    assert a.mae == pytest.approx((0 + 1 + 0 + 3) / 4)
    assert a.confusion[4][5] == 1 and a.confusion[1][4] == 1 and sum(map(sum, a.confusion)) == 4


def test_perfect_and_chance_free_cases():
    assert quadratic_kappa([0, 1, 2, 5], [0, 1, 2, 5], LABELS) == pytest.approx(1.0)
    assert quadratic_kappa([3, 3], [3, 3], LABELS) is None  # one label throughout: kappa is undefined
    assert quadratic_kappa([3], [3], LABELS) is None


@pytest.mark.parametrize("seed", range(20))
def test_kappa_matches_scikit_learn(seed):
    rng = random.Random(seed)
    n = rng.randint(5, 300)
    teacher = [rng.choice(LABELS) for _ in range(n)]
    model = [min(5, max(0, t + rng.choice([-2, -1, 0, 0, 0, 1, 3]))) for t in teacher]
    ours = quadratic_kappa(teacher, model, LABELS)
    theirs = cohen_kappa_score(teacher, model, weights="quadratic", labels=LABELS)
    assert ours == pytest.approx(theirs, abs=1e-9)


def test_labels_off_the_scale_count_as_unlabelled():
    a = agreement([(3, 7), (2, 2)], LABELS)
    assert a.labelled == 1 and a.exact == 0.5
