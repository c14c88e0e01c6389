"""The decision threshold for a target false-positive identification rate (FPIR).

The math. A stranger's face (a non-mated probe) is compared with every one of the gallery's
``C`` templates and is falsely accepted when the best cosine similarity exceeds the threshold
``t``. If each comparison exceeds ``t`` with probability ``FAR(t)`` (the per-comparison false
accept rate) and the comparisons are independent, then::

    FPIR(t) = 1 - (1 - FAR(t)) ** C      so, for a target FPIR,
    FAR     = 1 - (1 - FPIR) ** (1 / C)  (about FPIR / C when FPIR is small).

``FAR(t)`` is estimated from impostor scores: cosine similarities of pairs of embeddings of
different people, measured once per model. With ``n`` pairs, at most ``m = floor(n * FAR)`` of
them may exceed ``t``, so ``t`` is the ``(m + 1)``-th highest impostor score (the empirical
``1 - FAR`` quantile, taken so that the empirical FAR never exceeds the target). A match needs
similarity strictly above ``t``.

Templates of one member are positively correlated, which makes the independence formula err on
the safe side (the real FPIR is at most the target, up to sampling error).

Reliability. The sample says nothing about rates below ``1 / n``: when ``n * FAR < 1`` no
impostor pair may exceed ``t``, and the best the sample offers is its highest score. The
threshold is then clamped to that score and flagged unreliable: the real FPIR may be above the
target, and the remedy is more impostor pairs (more people in the calibration set). Just above
``1 / n`` the estimate rests on a handful of pairs and is noisy.

Storage. Millions of scores are summarised by a quantile table: the highest ``TAIL_RANKS``
scores exactly (every FAR down to ``1 / n`` is then exact) and ``GRID_POINTS`` ranks spaced
geometrically down to the lowest score. Between table ranks the lookup takes the next higher
table score, so a threshold from the table is never below the one the full sample would give.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from store_node.gallery.errors import CalibrationError, InvalidInputError
from store_node.gallery.inputs import as_embeddings, check_label

TAIL_RANKS = 2048
GRID_POINTS = 2048
MAX_CALIBRATION_EMBEDDINGS = 20_000
_JSON_FORMAT = "loyalnet-impostor-scores"
_JSON_VERSION = 1
_PAIR_BLOCK_ELEMENTS = 1 << 22  # scores per matrix block: 16 MiB of float32
# n * FAR is a product of floats; a hair of slack keeps e.g. 100 * 0.05 from flooring to 4.
_COUNT_SLACK = 1e-9


@dataclass(frozen=True, eq=False)
class ImpostorScores:
    """A model's impostor score distribution, as a quantile table of its upper tail.

    Attributes:
        model_version: the embedder the scores were measured with.
        scores: float32 cosine similarities in [-1, 1], sorted from highest to lowest;
            ``scores[i]`` is the ``ranks[i]``-th highest impostor score.
        ranks: int64, strictly increasing from 1 to ``pairs``.
        pairs: number of different-person pairs measured.
        source: where the embeddings came from, for people (e.g. "LFW single-photo people").
    """

    model_version: str
    scores: NDArray[np.float32]
    ranks: NDArray[np.int64]
    pairs: int
    source: str

    def __post_init__(self) -> None:
        scores = np.array(self.scores, dtype=np.float32)
        ranks = np.array(self.ranks, dtype=np.int64)
        if scores.ndim != 1 or scores.shape != ranks.shape or scores.size == 0:
            raise CalibrationError(
                "impostor scores need one rank per score and at least one of each; "
                "measure them again with `loyalnet store calibrate`."
            )
        if (
            ranks[0] != 1
            or ranks[-1] != self.pairs
            or (np.diff(ranks) <= 0).any()
            or not np.isfinite(scores).all()
            or (np.diff(scores) > 0).any()
        ):
            raise CalibrationError(
                "the impostor score table is inconsistent (ranks must rise from 1 to the pair "
                "count and scores must not rise); measure them again with "
                "`loyalnet store calibrate`."
            )
        scores.setflags(write=False)
        ranks.setflags(write=False)
        # Frozen: the validated read-only copies replace whatever arrays the caller passed.
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "ranks", ranks)

    @classmethod
    def from_scores(
        cls,
        scores: NDArray[np.floating[Any]] | Sequence[float],
        model_version: str,
        source: str,
        *,
        tail: int = TAIL_RANKS,
        grid: int = GRID_POINTS,
    ) -> ImpostorScores:
        """Summarise raw impostor ``scores`` (cosines, any order) into a quantile table."""
        values = np.asarray(scores, dtype=np.float32).ravel()
        if values.size == 0:
            raise CalibrationError(
                "no impostor scores to calibrate with; use embeddings of at least two people."
            )
        if not np.isfinite(values).all():
            raise CalibrationError("impostor scores contain NaN or infinity; the embedder failed.")
        descending = np.sort(values)[::-1]
        pairs = int(descending.size)
        exact = np.arange(1, min(tail, pairs) + 1, dtype=np.int64)
        spaced = np.geomspace(max(tail, 1), pairs, num=grid) if pairs > tail else np.empty(0)
        ranks = np.unique(np.concatenate([exact, np.round(spaced).astype(np.int64), [pairs]]))
        return cls(
            model_version=check_label(model_version, "the model version"),
            scores=descending[ranks - 1],
            ranks=ranks,
            pairs=pairs,
            source=source,
        )

    def score_at_rank(self, rank: int) -> float:
        """The ``rank``-th highest impostor score (1 = highest), or the next higher table entry."""
        if not 1 <= rank <= self.pairs:
            raise InvalidInputError(f"rank must lie in [1, {self.pairs}], not {rank}.")
        index = int(np.searchsorted(self.ranks, rank, side="right")) - 1
        return float(self.scores[index])

    def count_above(self, threshold: float) -> int:
        """How many impostor scores are strictly above ``threshold``.

        Exact within the table's exact tail (the highest ``TAIL_RANKS`` scores); beyond it, the
        largest count the table allows, so a rate estimated from it never errs low.
        """
        above = int(np.count_nonzero(self.scores > threshold))
        if above == 0:
            return 0
        if above == self.scores.size:
            return self.pairs
        # scores[above] is the first table entry at or below the threshold: every score of a
        # rank before it may still be above.
        return int(self.ranks[above]) - 1

    def to_json(self) -> str:
        """The table as JSON (scores in shortest float32 form)."""
        return json.dumps(
            {
                "format": _JSON_FORMAT,
                "version": _JSON_VERSION,
                "model_version": self.model_version,
                "source": self.source,
                "pairs": self.pairs,
                "ranks": [int(rank) for rank in self.ranks],
                # str() of a float32 is its shortest round-tripping decimal.
                "scores": [float(str(score)) for score in self.scores],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ImpostorScores:
        """The table written by :meth:`to_json`.

        Raises:
            CalibrationError: when ``text`` is not such a table.
        """
        try:
            data = json.loads(text)
            if data.get("format") != _JSON_FORMAT or data.get("version") != _JSON_VERSION:
                raise ValueError("not a loyalnet impostor score table of a known version")
            return cls(
                model_version=str(data["model_version"]),
                scores=np.asarray(data["scores"], dtype=np.float32),
                ranks=np.asarray(data["ranks"], dtype=np.int64),
                pairs=int(data["pairs"]),
                source=str(data["source"]),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise CalibrationError(
                f"the impostor score file cannot be read ({error}); "
                "measure them again with `loyalnet store calibrate`."
            ) from error


@dataclass(frozen=True)
class Threshold:
    """A decision threshold and how it was reached.

    Attributes:
        value: cosine similarity; a probe matches a member when its similarity is > value.
        fpir: the target false-positive identification rate, in (0, 1).
        comparisons: templates each probe is compared with.
        far_per_comparison: the per-comparison false accept rate the threshold aims at.
        reliable: False when the sample has too few impostor pairs for that rate
            (``pairs * far_per_comparison < 1``); ``value`` is then the highest score observed.
        note: why the threshold is unreliable and what to do; "" when reliable.
    """

    value: float
    fpir: float
    comparisons: int
    far_per_comparison: float
    reliable: bool
    note: str = ""


def far_per_comparison(fpir: float, comparisons: int) -> float:
    """``1 - (1 - fpir) ** (1 / comparisons)``, computed without cancellation for tiny fpir."""
    check_fpir(fpir)
    if isinstance(comparisons, bool) or not isinstance(comparisons, int) or comparisons < 1:
        raise InvalidInputError(
            f"comparisons must be a whole number >= 1 (templates a probe meets), not {comparisons}."
        )
    return -math.expm1(math.log1p(-fpir) / comparisons)


def threshold_for_fpir(scores: ImpostorScores, fpir: float, comparisons: int) -> Threshold:
    """The threshold at which strangers searched against ``comparisons`` templates are falsely
    accepted with probability ``fpir`` (see the module docstring for the math).

    Monotone: a larger ``fpir`` never raises the threshold, more ``comparisons`` never lower it.
    """
    far = far_per_comparison(fpir, comparisons)
    allowed = min(math.floor(scores.pairs * far + _COUNT_SLACK), scores.pairs - 1)
    value = scores.score_at_rank(allowed + 1)
    reliable = allowed >= 1
    note = ""
    if not reliable:
        note = (
            f"the per-comparison FAR {far:.3g} is below 1/{scores.pairs} impostor pairs, so the "
            f"threshold is clamped to the highest impostor score seen and the real FPIR may "
            f"exceed {fpir:g}; calibrate with more people."
        )
    return Threshold(value, fpir, comparisons, far, reliable, note)


def check_fpir(fpir: float) -> float:
    """``fpir`` as a float if it lies strictly between 0 and 1."""
    value = float(fpir)
    if not 0.0 < value < 1.0:
        raise InvalidInputError(f"the target FPIR must lie strictly between 0 and 1, not {fpir}.")
    return value


def impostor_scores_from_embeddings(
    embeddings: NDArray[np.floating[Any]],
    identities: Sequence[str],
    model_version: str,
    source: str,
) -> ImpostorScores:
    """Impostor scores of every pair of embeddings with different identities.

    Exact: all ``N (N - 1) / 2`` pairs are scored (block by block, so memory stays near the
    scores themselves: about 50 MB for 5,000 embeddings).

    Args:
        embeddings: (N, 128) embeddings of ``model_version``; re-normalised to unit length.
        identities: the person of each embedding; at least two distinct people.

    Raises:
        CalibrationError: with fewer than two people, or more than 20,000 embeddings
            (subsample: the pair count grows with the square of N).
    """
    vectors = as_embeddings(embeddings)
    count = vectors.shape[0]
    if len(identities) != count:
        raise InvalidInputError(
            f"{count} embeddings but {len(identities)} identities; give one identity per embedding."
        )
    if count > MAX_CALIBRATION_EMBEDDINGS:
        raise CalibrationError(
            f"{count} embeddings would give {count * (count - 1) // 2} pairs; use at most "
            f"{MAX_CALIBRATION_EMBEDDINGS} (sample fewer people or photos)."
        )
    _, person = np.unique(np.asarray(list(identities), dtype=object), return_inverse=True)
    person = person.astype(np.int64)
    if int(person.max(initial=0)) < 1:
        raise CalibrationError(
            "calibration needs embeddings of at least two different people; add more people."
        )
    columns = np.arange(count)
    block_rows = max(1, _PAIR_BLOCK_ELEMENTS // count)
    parts: list[NDArray[np.float32]] = []
    for start in range(0, count, block_rows):
        stop = min(count, start + block_rows)
        block = vectors[start:stop] @ vectors.T
        rows = np.arange(start, stop)[:, None]
        # Each unordered pair once (j > i), and only pairs of different people.
        keep = (columns[None, :] > rows) & (person[None, :] != person[start:stop, None])
        parts.append(np.clip(block[keep], -1.0, 1.0).astype(np.float32))
    return ImpostorScores.from_scores(np.concatenate(parts), model_version, source)
