"""Readers for the shared face data sets: file paths and labels, never decoded pixels.

Every reader finds its folder through :func:`loyalnet.assets.dataset_dir`, so a missing data set
raises :class:`loyalnet.assets.AssetError` with a message that says where it was expected.
"""

from store_node.datasets.lfw import Pair, lfw_pairs, lfw_people
from store_node.datasets.orl import orl_people
from store_node.datasets.yale import yale_lighting, yale_people

__all__ = [
    "Pair",
    "lfw_pairs",
    "lfw_people",
    "orl_people",
    "yale_lighting",
    "yale_people",
]
