"""Verification metrics against small hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from store_node.bench import kfold_accuracy, tar_at_far
from store_node.bench.verification import accuracy_at, best_threshold


def test_best_threshold_separable() -> None:
    # Candidates -0.9, 0.15, 0.5, 0.85, 1.9: only 0.5 gets all four right.
    assert best_threshold([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == pytest.approx(0.5)


def test_best_threshold_keeps_tied_scores_together() -> None:
    # Three pairs tie at 0.5; candidates -0.5 (3/4 right), 0.7 (2/4), 1.9 (1/4).
    threshold = best_threshold([0.5, 0.5, 0.5, 0.9], [True, False, True, True])
    assert threshold == pytest.approx(-0.5)


def test_best_threshold_takes_lowest_of_equally_good() -> None:
    # Candidates -0.9 (1/3), 0.2 (2/3), 0.4 (1/3), 1.5 (2/3): 0.2 and 1.5 tie, 0.2 wins.
    assert best_threshold([0.1, 0.3, 0.5], [False, True, False]) == pytest.approx(0.2)


def test_accuracy_at_is_strictly_above() -> None:
    assert accuracy_at([0.5, 0.5], [True, False], 0.5) == pytest.approx(0.5)


def test_kfold_accuracy_hand_computed() -> None:
    # fold 0: 0.9 same, 0.2 diff; fold 1: 0.8 same, 0.4 diff; fold 2: 0.3 same, 0.7 diff.
    # Test 0: trained on folds 1+2 -> threshold 0.75 -> both right -> 1.0.
    # Test 1: trained on 0+2 -> 0.25 and 0.8 tie at 3/4, lowest 0.25 -> 0.4 diff accepted -> 0.5.
    # Test 2: trained on 0+1 -> 0.6 -> both wrong -> 0.0.
    scores = [0.7, 0.9, 0.4, 0.3, 0.2, 0.8]
    same = [False, True, False, True, False, True]
    folds = [2, 0, 1, 2, 0, 1]
    mean, std, per_fold = kfold_accuracy(scores, same, folds)
    assert per_fold == pytest.approx([1.0, 0.5, 0.0])
    assert mean == pytest.approx(0.5)
    assert std == pytest.approx(math.sqrt(1 / 6))


def test_kfold_accuracy_perfect() -> None:
    rng = np.random.default_rng(0)
    folds = np.repeat(np.arange(10), 20)
    same = np.tile([True, False], 100)
    scores = np.where(same, rng.uniform(0.6, 1.0, 200), rng.uniform(-0.2, 0.4, 200))
    mean, std, per_fold = kfold_accuracy(scores, same, folds)
    assert (mean, std) == (1.0, 0.0)
    assert len(per_fold) == 10


def test_kfold_accuracy_rejects_one_fold() -> None:
    with pytest.raises(ValueError, match="two folds"):
        kfold_accuracy([0.1, 0.9], [False, True], [0, 0])


def test_kfold_accuracy_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="folds"):
        kfold_accuracy([0.1, 0.9], [False, True], [0, 1, 1])
    with pytest.raises(ValueError, match="same"):
        kfold_accuracy([0.1, 0.9], [False], [0, 1])


IMPOSTORS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
GENUINE = [0.55, 0.75, 0.95, 1.05]


@pytest.mark.parametrize(
    ("far", "expected"),
    [
        (0.0, 0.25),  # k=0: threshold 1.0, only 1.05 passes
        (0.1, 0.5),  # k=1: threshold 0.9 -> 0.95, 1.05
        (0.25, 0.5),  # k=floor(2.5)=2: threshold 0.8 -> 0.95, 1.05
        (0.3, 0.75),  # k=3: threshold 0.7 -> 0.75, 0.95, 1.05
        (1.0, 1.0),  # every impostor may pass
    ],
)
def test_tar_at_far_hand_computed(far: float, expected: float) -> None:
    scores = IMPOSTORS + GENUINE
    same = [False] * len(IMPOSTORS) + [True] * len(GENUINE)
    assert tar_at_far(scores, same, far) == pytest.approx(expected)


def test_tar_at_far_with_tied_impostors_stays_under_far() -> None:
    # Impostors sorted high to low: 0.9, 0.9, 0.9, 0.5. FAR 0.5 allows k=2, threshold = third
    # highest = 0.9; strictly above it no impostor passes (FAR 0 <= 0.5) and of the genuine
    # scores 0.9 and 0.95 only 0.95 does.
    scores = [0.5, 0.9, 0.9, 0.9, 0.9, 0.95]
    same = [False, False, False, False, True, True]
    assert tar_at_far(scores, same, 0.5) == pytest.approx(0.5)
    # k=3: threshold 0.5, both genuine pass (and three impostors: FAR 3/4 <= 0.75).
    assert tar_at_far(scores, same, 0.75) == pytest.approx(1.0)


def test_tar_at_far_rounding_of_allowed_count() -> None:
    # 0.29 * 100 is 28.999999999999996 in floating point; 29 impostors may still pass, so the
    # threshold is the 30th highest impostor score, 70 of 0..99.
    impostors = [float(i) for i in range(100)]
    scores = [*impostors, 69.5, 70.5]
    same = [False] * 100 + [True, True]
    assert tar_at_far(scores, same, 0.29) == pytest.approx(0.5)


def test_tar_at_far_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="far"):
        tar_at_far([0.1, 0.9], [False, True], 1.5)
    with pytest.raises(ValueError, match="both"):
        tar_at_far([0.1, 0.9], [True, True], 0.1)
    with pytest.raises(ValueError, match="finite"):
        tar_at_far([float("nan"), 0.9], [False, True], 0.1)
