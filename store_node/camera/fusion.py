"""One decision from the best few frames of a track: fuse the embeddings, or let them vote.

- **mean** (template fusion): average the unit embeddings of the frames, normalise, search
  once. Averaging cancels per-frame noise (blur, expression, lighting), which the literature
  on video face recognition finds to beat per-frame decisions (e.g. the IJB-A/IJB-C protocols
  score a track by its pooled feature).
- **vote** (decision fusion): search every frame; the visit names a member only when more than
  half of the frames name the same one, with the best of their similarities.

Both answer at the store's threshold, so their false accepts are comparable;
``loyalnet bench stream`` measures both on the same tracks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from store_node.gallery.records import Match

Search = Callable[[NDArray[np.float32]], list[Match]]
"""(Q, 128) unit embeddings -> the gallery's answer for each, at the store's threshold."""


@dataclass(frozen=True)
class VisitDecision:
    """Who a track was: a member id or None (unknown), and the similarity it rests on."""

    member_id: str | None
    similarity: float


Fusion = Callable[[NDArray[np.float32], Search], VisitDecision]
"""(K, 128) embeddings of a track's best frames and the search -> one decision."""


def mean_fusion(embeddings: NDArray[np.float32], search: Search) -> VisitDecision:
    """Search the normalised mean of the embeddings."""
    pooled = embeddings.mean(axis=0)
    norm = float(np.linalg.norm(pooled))
    if norm < 1e-6:  # opposite embeddings cancel: nothing to recognise
        return VisitDecision(None, -1.0)
    match = search((pooled / norm).astype(np.float32)[None, :])[0]
    return VisitDecision(match.member_id, match.similarity)


def vote_fusion(embeddings: NDArray[np.float32], search: Search) -> VisitDecision:
    """Search each embedding; a member needs more than half of the frames."""
    matches = search(embeddings)
    named = Counter(m.member_id for m in matches if m.member_id is not None)
    if named:
        member, votes = named.most_common(1)[0]
        if votes * 2 > len(matches):
            best = max(m.similarity for m in matches if m.member_id == member)
            return VisitDecision(member, best)
    return VisitDecision(None, max(m.similarity for m in matches))


FUSIONS: dict[str, Fusion] = {"mean": mean_fusion, "vote": vote_fusion}
