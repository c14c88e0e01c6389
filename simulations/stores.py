"""Real store folders for the simulated stores: the folders the store's own training reads.

Each simulated store is a store folder like any other (``store.toml``, ``gallery.db``,
``store.key``) with its members enrolled through :func:`store_node.enrolment.enrol_aligned`:
consent to recognition and model improvement first, then templates and sealed crops. So the
simulation trains with exactly the code a store runs, reading the same encrypted gallery.

Training writes into a gallery (each member's CosFace class row), so every strategy starts
from a fresh copy of the folders made here (:func:`fresh_copies`): no strategy inherits
another's class rows.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from simulations.photos import PhotoBook, Shot
from simulations.population import SimMember
from store_node.config import StoreConfig, StorePaths, TrainingLimits, write_config
from store_node.enrolment import EnrolmentRequest, enrol_aligned
from store_node.face import FacePipeline
from store_node.gallery import Gallery, Purpose

CONSENT = frozenset({Purpose.RECOGNITION, Purpose.MODEL_IMPROVEMENT})
"""Every simulated member agreed to both purposes (members who did not would not train)."""


def create_store(
    folder: Path,
    store_id: str,
    members: Sequence[tuple[SimMember, str]],
    book: PhotoBook,
    pipeline: FacePipeline,
    advance: Callable[[int], None] | None = None,
    limits: TrainingLimits | None = None,
) -> int:
    """Create the store folder and enrol ``members`` from their aligned enrolment photos.

    Args:
        folder: a folder that does not exist yet.
        members: each member with the camera condition their photos were taken under.
        book: holds the aligned crops of the members' enrolment shots.
        advance: called with 1 after each member, for a progress bar.
        limits: the store's privacy floor (``[training]`` of its store.toml); the default one
            when None. An experiment's stores must admit the experiment's own round settings.

    Returns:
        How many members were enrolled; one with no usable enrolment photo is left out.
    """
    paths = StorePaths(folder)
    folder.mkdir(parents=True)
    config = StoreConfig(store_id=store_id, training=limits or TrainingLimits())
    write_config(paths, config)
    enrolled = 0
    with Gallery.create(paths.database, paths.key) as gallery:
        for member, condition in members:
            crops = [book.crop(Shot(path, condition)) for path in member.enrol]
            found = [crop for crop in crops if crop is not None]
            if found:
                request = EnrolmentRequest.under(config, member.member_id, CONSENT)
                enrol_aligned(gallery, pipeline, request, np.stack(found))
                enrolled += 1
            if advance is not None:
                advance(1)
    return enrolled


def fresh_copies(originals: Sequence[Path], folder: Path) -> list[Path]:
    """Copies of the store folders ``originals`` under ``folder`` (replacing earlier ones)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    copies = []
    for original in originals:
        copy = folder / original.name
        shutil.copytree(original, copy)
        copies.append(copy)
    return copies
