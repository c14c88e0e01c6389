"""What a store learns about strangers from its own members, seen through its own camera.

Why. The shipped impostor scores come from clean LFW photos. A camera that makes faces alike
(dark, blurred, small) raises every impostor score, so a threshold calibrated on clean photos
lets strangers in far more often than the store's target FPIR promises. A store cannot keep
strangers' faces to calibrate on, but it holds its members' templates, enrolled through the same
camera, and every member is a stranger to every *other* member.

The sample (member-level, as NIST FRTE 1:N counts it). Each probe template ``i`` of member
``a`` is searched against every other member ``b``; that member's score is the best of its
templates, ``s(i, b) = max_j in b cos(e_i, e_j)``, exactly what :meth:`Gallery.identify` computes
for a walk-in. These ``s(i, b)`` are the store's own impostor scores. A stranger searched
against ``M`` members is accepted when one of ``M`` member scores clears ``t``, so, as in
:mod:`store_node.gallery.calibration` but per member instead of per template::

    FPIR(t) = 1 - (1 - F(t)) ** M,      F(t) = P(s(i, b) > t)

Per member, not per template: a member's templates are strongly correlated, so counting them
as independent comparisons would overstate the FPIR by up to the number of photos a member has.

The same pass gives the cost on members (leave one template out): probe ``i`` of member ``a``
with at least one other template is found when its best own-member score clears ``t`` and
beats every other member. FNIR is the share of probes not found. Enrolment photos are taken in
one sitting, so this FNIR is optimistic against walk-ins on other days; it is what the store's
own data can show.

Uncertainty. With ``k`` of ``n`` own impostor scores above ``t``, the per-member rate has the
exact (Clopper-Pearson) binomial interval, mapped through the formula above. A small store has
few scores: with 12 members and 5 photos each, ``n = 660`` and no count can show a per-member
rate of 1e-4, so the interval says so instead of pretending.

Scale. A gallery of 10,000 members (50,000 templates) would give 5e8 scores; at most
``MAX_PROBES`` templates, spread evenly over the gallery, are searched (2e7 scores at that size),
in blocks so that memory stays near the kept scores themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from store_node.gallery.calibration import ImpostorScores
from store_node.gallery.errors import InvalidInputError
from store_node.gallery.inputs import as_embeddings

MAX_PROBES = 2000
TAIL_KEEP = 5000
"""Highest template-level own impostor scores kept (for :mod:`store_node.threshold`'s shift)."""
CONFIDENCE = 0.95
OWN_CAMERA_SOURCE = "the store's own members through its own camera"
_BLOCK_ELEMENTS = 1 << 22  # similarities per block: 16 MiB of float32
_EXACT_INTERVAL_MAX_COUNT = 5_000  # beyond, the normal approximation is exact to many digits


@dataclass(frozen=True, eq=False)
class OwnCameraSample:
    """The store's own impostor scores and leave-one-out searches of its members.

    Attributes:
        scores: member-level impostor scores (one per probe template and other member).
        members: members a walk-in is searched against (``M`` in the module docstring).
        probes: templates searched (at most :data:`MAX_PROBES`).
        own_best: (P,) per probe, its best score among its member's other templates; -inf when
            the member has no other template (such probes count for impostors only).
        other_best: (P,) per probe, the best score of any other member.
        template_pairs: template-level own impostor scores: every probe template against every
            template of another member (the reference's unit, one comparison per template).
        template_tail: the highest of those, descending, at most :data:`TAIL_KEEP`.
    """

    scores: ImpostorScores
    members: int
    probes: int
    own_best: NDArray[np.float32]
    other_best: NDArray[np.float32]
    template_pairs: int = 0
    template_tail: NDArray[np.float32] = field(
        default_factory=lambda: np.zeros(0, dtype=np.float32)
    )

    def template_score_at_rank(self, rank: int) -> float | None:
        """The ``rank``-th highest template-level own impostor score (1 is the highest), or
        None when fewer are kept."""
        if not 1 <= rank <= self.template_tail.size:
            return None
        return float(self.template_tail[rank - 1])

    def fnir(self, threshold: float) -> tuple[float, int]:
        """Share of members' held-out templates not found at ``threshold``, and how many tried.

        Found: the own member's score is above ``threshold`` and above every other member's.
        """
        tried = np.isfinite(self.own_best)
        count = int(tried.sum())
        if count == 0:
            return float("nan"), 0
        own, other = self.own_best[tried], self.other_best[tried]
        found = (own > threshold) & (own > other)
        return float(1.0 - found.mean()), count


def own_camera_sample(
    embeddings: NDArray[np.floating[Any]],
    owners: Sequence[str],
    model_version: str,
    *,
    max_probes: int = MAX_PROBES,
) -> OwnCameraSample | None:
    """Search the gallery's templates against the gallery itself, member by member.

    Args:
        embeddings: (N, 128) templates of ``model_version``, unit length, grouped by owner.
        owners: the member of each template, sorted (as :meth:`Gallery.searchable_templates`
            gives them).
        max_probes: templates searched at most, spread evenly over the gallery.

    Returns:
        None when the gallery has fewer than two members (no member is a stranger to another).
    """
    vectors = as_embeddings(embeddings, allow_empty=True)
    if len(owners) != vectors.shape[0]:
        raise InvalidInputError(
            f"{vectors.shape[0]} templates but {len(owners)} owners; give one owner per template."
        )
    if list(owners) != sorted(owners):
        raise InvalidInputError("templates must be grouped by member, owners sorted.")
    starts = np.flatnonzero(np.r_[True, np.asarray(owners[1:]) != np.asarray(owners[:-1])])
    members = int(starts.size) if owners else 0
    if members < 2:
        return None
    ends = np.r_[starts[1:], len(owners)]
    member_of = np.repeat(np.arange(members), ends - starts)
    chosen = np.unique(np.linspace(0, len(owners) - 1, num=min(max_probes, len(owners))).round())
    chosen = chosen.astype(np.int64)
    impostor: list[NDArray[np.float32]] = []
    tail = np.zeros(0, dtype=np.float32)
    template_pairs = 0
    own_best = np.full(chosen.size, -np.inf, dtype=np.float32)
    other_best = np.full(chosen.size, -np.inf, dtype=np.float32)
    rows = max(1, _BLOCK_ELEMENTS // max(1, len(owners)))
    for first in range(0, chosen.size, rows):
        block = chosen[first : first + rows]
        similarity = vectors[block] @ vectors.T
        # A template is not its own comparison: the leave-one-out genuine score needs the rest.
        similarity[np.arange(block.size), block] = -np.inf
        mine = member_of[block]
        per_member = np.maximum.reduceat(similarity, starts, axis=1)
        own_best[first : first + block.size] = per_member[np.arange(block.size), mine]
        # Template level: the own member's columns leave the block (done with it above), and
        # only scores that can still enter the kept tail are copied out of it.
        for row, member in enumerate(mine):
            similarity[row, starts[member] : ends[member]] = -np.inf
        template_pairs += int((len(owners) - (ends[mine] - starts[mine])).sum())
        cutoff = tail[-1] if tail.size == TAIL_KEEP else -np.inf
        tail = _highest(np.concatenate([tail, similarity[similarity > cutoff]]), TAIL_KEEP)
        per_member[np.arange(block.size), mine] = -np.inf
        other_best[first : first + block.size] = per_member.max(axis=1)
        others = np.ones_like(per_member, dtype=bool)
        others[np.arange(block.size), mine] = False
        impostor.append(np.clip(per_member[others], -1.0, 1.0).astype(np.float32))
    scores = ImpostorScores.from_scores(np.concatenate(impostor), model_version, OWN_CAMERA_SOURCE)
    return OwnCameraSample(
        scores, members, int(chosen.size), own_best, other_best, template_pairs, tail
    )


def _highest(scores: NDArray[np.float32], keep: int) -> NDArray[np.float32]:
    """The ``keep`` highest of ``scores``, descending."""
    if scores.size > keep:
        scores = np.partition(scores, scores.size - keep)[scores.size - keep :]
    return np.sort(scores)[::-1]


@dataclass(frozen=True)
class FpirEstimate:
    """The FPIR one sample of impostor scores expects at a threshold.

    Attributes:
        fpir: point estimate, in [0, 1].
        low, high: the :data:`CONFIDENCE` interval (exact binomial on the per-comparison rate).
        above: impostor scores above the threshold (an upper bound beyond the exact tail of the
            table, so the estimate errs high).
        scores: impostor scores the estimate rests on.
        comparisons: comparisons per search it is scaled to (templates or members).
        source: where the impostor scores came from.
    """

    fpir: float
    low: float
    high: float
    above: int
    scores: int
    comparisons: int
    source: str

    def shows(self, target: float) -> bool:
        """Whether the sample is big enough that the interval could lie below ``2 * target``."""
        return _fpir(binomial_interval(0, self.scores)[1], self.comparisons) <= 2 * target


def estimate_fpir(scores: ImpostorScores, threshold: float, comparisons: int) -> FpirEstimate:
    """The FPIR that ``scores`` expect at ``threshold`` for searches of ``comparisons``."""
    above = scores.count_above(threshold)
    low, high = binomial_interval(above, scores.pairs)
    return FpirEstimate(
        fpir=_fpir(above / scores.pairs, comparisons),
        low=_fpir(low, comparisons),
        high=_fpir(high, comparisons),
        above=above,
        scores=scores.pairs,
        comparisons=comparisons,
        source=scores.source,
    )


def binomial_interval(
    successes: int, trials: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of a binomial rate: ``successes`` of ``trials``.

    Never narrower than the truth at ``confidence``; with 0 successes the upper end is about
    ``3.7 / trials`` at 95%.
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise InvalidInputError(
            f"need 0 <= successes <= trials and trials >= 1, not {successes} of {trials}."
        )
    if not 0.0 < confidence < 1.0:
        raise InvalidInputError(f"confidence must lie strictly between 0 and 1, not {confidence}.")
    tail = (1.0 - confidence) / 2.0
    if successes > _EXACT_INTERVAL_MAX_COUNT and trials - successes > _EXACT_INTERVAL_MAX_COUNT:
        rate = successes / trials
        spread = 1.959963984540054 * math.sqrt(rate * (1.0 - rate) / trials)
        return max(0.0, rate - spread), min(1.0, rate + spread)
    log_choose = _log_choose(successes, trials)
    low = 0.0
    if successes > 0:
        low = _solve(lambda p: 1.0 - _cdf(log_choose[:-1], trials, p), tail)
    high = 1.0
    if successes < trials:
        high = _solve(lambda p: -_cdf(log_choose, trials, p), -tail)
    return low, high


def _log_choose(k: int, n: int) -> NDArray[np.float64]:
    """``log C(n, i)`` for i = 0 .. k."""
    i = np.arange(k + 1, dtype=np.float64)
    lgamma = np.vectorize(math.lgamma, otypes=[np.float64])
    log_choose: NDArray[np.float64] = math.lgamma(n + 1) - lgamma(i + 1) - lgamma(n - i + 1)
    return log_choose


def _cdf(log_choose: NDArray[np.float64], n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), k = len(log_choose) - 1, summed in log space."""
    if log_choose.size == 0:
        return 0.0
    i = np.arange(log_choose.size, dtype=np.float64)
    log_terms = log_choose + i * math.log(p) + (n - i) * math.log1p(-p)
    peak = float(log_terms.max())
    return min(1.0, math.exp(peak) * float(np.exp(log_terms - peak).sum()))


def _solve(increasing: Callable[[float], float], target: float) -> float:
    """The p in (0, 1) where ``increasing(p) == target``, by bisection on log p (tiny rates)."""
    low, high = -60.0, -1e-12  # log10 p
    for _ in range(80):
        middle = (low + high) / 2.0
        if increasing(10.0**middle) < target:
            low = middle
        else:
            high = middle
    return float(10.0 ** ((low + high) / 2.0))


def _fpir(rate: float, comparisons: int) -> float:
    """``1 - (1 - rate) ** comparisons`` without cancellation."""
    if rate >= 1.0:
        return 1.0
    return -math.expm1(comparisons * math.log1p(-rate))
