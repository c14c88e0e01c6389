"""Synthetic embeddings and crops for gallery tests that need no face (the storage layer)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray


def unit_vectors(rng: np.random.Generator, count: int) -> NDArray[np.float32]:
    """``count`` random 128-d unit embeddings."""
    vectors = rng.normal(size=(count, 128)).astype(np.float32)
    unit: NDArray[np.float32] = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(
        np.float32
    )
    return unit


def random_crops(rng: np.random.Generator, count: int) -> NDArray[np.uint8]:
    """``count`` random 112x112x3 uint8 crops."""
    return rng.integers(0, 256, size=(count, 112, 112, 3), dtype=np.uint8)


class FakeGrid:
    """Just what configuring a round asks of a Flower Grid: the connected nodes."""

    def __init__(self, nodes: Sequence[int]) -> None:
        self.nodes = list(nodes)

    def get_node_ids(self) -> list[int]:
        return self.nodes
