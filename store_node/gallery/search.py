"""1:N search: the member whose closest template is most similar to a probe, or "unknown"."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from store_node.gallery.records import Match


class TemplateIndex:
    """Searchable templates, grouped by member; build once, search many probes.

    Args:
        owners: the member of each template row, sorted (a member's rows are consecutive).
        templates: (M, 128) unit-length float32 templates in the order of ``owners``.
    """

    def __init__(self, owners: Sequence[str], templates: NDArray[np.float32]) -> None:
        if len(owners) != templates.shape[0]:
            raise ValueError(f"{len(owners)} owners for {templates.shape[0]} templates")
        self.templates = templates
        self._starts = [0] + [i for i in range(1, len(owners)) if owners[i] != owners[i - 1]]
        self.members = [owners[i] for i in self._starts] if owners else []

    def __len__(self) -> int:
        """Templates in the index."""
        return int(self.templates.shape[0])

    def search(self, probes: NDArray[np.float32], threshold: float) -> list[Match]:
        """For each (Q, 128) unit-length probe, the best member by cosine similarity; it
        matches when the similarity is strictly above ``threshold``."""
        if probes.shape[0] == 0:
            return []
        if not self.members:
            return [Match(None, "", -1.0, threshold) for _ in range(probes.shape[0])]
        # One reduceat over the member-grouped columns gives each member's best template.
        per_member = np.maximum.reduceat(probes @ self.templates.T, self._starts, axis=1)
        best = np.argmax(per_member, axis=1)
        matches = []
        for row, column in enumerate(best):
            similarity = float(np.clip(per_member[row, column], -1.0, 1.0))
            candidate = self.members[int(column)]
            member = candidate if similarity > threshold else None
            matches.append(Match(member, candidate, similarity, threshold))
        return matches
