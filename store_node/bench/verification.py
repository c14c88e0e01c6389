"""Face verification metrics on similarity scores: k-fold accuracy and TAR at a fixed FAR.

A pair is accepted as "same person" when its score is strictly above the threshold. Scores may
be any real numbers (cosine similarities lie in [-1, 1]); higher means more alike.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def best_threshold(scores: npt.ArrayLike, same: npt.ArrayLike) -> float:
    """The threshold with the highest accuracy on these pairs.

    Candidates are the midpoints between consecutive distinct sorted scores, plus one below the
    lowest and one above the highest score (accept all / reject all). Midpoints never equal a
    score, so tied scores always fall on the same side. Among equally accurate candidates the
    lowest is taken.

    Raises:
        ValueError: on empty or mismatched inputs.
    """
    values, labels = _check(scores, same)
    distinct = np.unique(values)
    candidates = np.concatenate(
        ([distinct[0] - 1.0], (distinct[:-1] + distinct[1:]) / 2.0, [distinct[-1] + 1.0])
    )
    # Counting through sorted arrays keeps this O(n log n): thousands of candidates per fold.
    genuine = np.sort(values[labels])
    impostor = np.sort(values[~labels])
    true_accepts = genuine.size - np.searchsorted(genuine, candidates, side="right")
    true_rejects = np.searchsorted(impostor, candidates, side="right")
    correct = true_accepts + true_rejects
    return float(candidates[int(np.argmax(correct))])


def accuracy_at(scores: npt.ArrayLike, same: npt.ArrayLike, threshold: float) -> float:
    """Fraction of pairs, in [0, 1], classified right when accepting ``score > threshold``."""
    values, labels = _check(scores, same)
    return float(np.mean((values > threshold) == labels))


def kfold_accuracy(
    scores: npt.ArrayLike, same: npt.ArrayLike, folds: npt.ArrayLike
) -> tuple[float, float, list[float]]:
    """Cross-validated verification accuracy, the LFW View 2 protocol.

    For each fold in turn, the threshold is fitted (:func:`best_threshold`) on the pairs of all
    other folds and the accuracy measured on that fold alone.

    Args:
        scores: (P,) similarity of each pair.
        same: (P,) bool, True for same-person pairs.
        folds: (P,) int fold label of each pair; at least two distinct labels.

    Returns:
        ``(mean, std, per_fold)``: accuracies in [0, 1], per fold in ascending fold-label order;
        ``std`` is the population standard deviation (ddof=0) over the folds.

    Raises:
        ValueError: on empty or mismatched inputs or fewer than two folds.
    """
    values, labels = _check(scores, same)
    fold_of = np.asarray(folds)
    if fold_of.shape != values.shape:
        raise ValueError(f"folds has shape {fold_of.shape}, expected {values.shape}")
    fold_ids = np.unique(fold_of)
    if fold_ids.size < 2:
        raise ValueError("k-fold accuracy needs at least two folds")
    per_fold: list[float] = []
    for fold in fold_ids:
        test = fold_of == fold
        threshold = best_threshold(values[~test], labels[~test])
        per_fold.append(accuracy_at(values[test], labels[test], threshold))
    return float(np.mean(per_fold)), float(np.std(per_fold)), per_fold


def tar_at_far(scores: npt.ArrayLike, same: npt.ArrayLike, far: float) -> float:
    """True accept rate, in [0, 1], at the lowest threshold whose false accept rate is <= ``far``.

    With ``n`` impostor (different-person) scores, at most ``k = floor(far * n)`` of them may be
    accepted, so the threshold is the ``(k+1)``-th highest impostor score: accepting only scores
    strictly above it lets through at most ``k`` impostors (fewer when scores tie there). TAR is
    then the fraction of genuine scores strictly above the threshold.

    Args:
        scores: (P,) similarity of each pair.
        same: (P,) bool, True for same-person pairs; both kinds must be present.
        far: the allowed false accept rate, in [0, 1].

    Raises:
        ValueError: on empty or mismatched inputs, a missing kind of pair, or ``far`` outside
            [0, 1].
    """
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must lie in [0, 1], got {far}")
    values, labels = _check(scores, same)
    genuine = values[labels]
    impostor = np.sort(values[~labels])[::-1]
    if genuine.size == 0 or impostor.size == 0:
        raise ValueError("TAR at FAR needs both same-person and different-person pairs")
    # The small epsilon stops far * n landing just under an integer from float rounding.
    allowed = int(np.floor(far * impostor.size + 1e-9))
    if allowed >= impostor.size:
        return 1.0
    threshold = impostor[allowed]
    return float(np.mean(genuine > threshold))


def _check(scores: npt.ArrayLike, same: npt.ArrayLike) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    values = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(same, dtype=bool)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, got shape {values.shape}")
    if labels.shape != values.shape:
        raise ValueError(f"same has shape {labels.shape}, expected {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("scores must be finite")
    return values, labels
