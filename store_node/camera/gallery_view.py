"""The gallery as the cameras search it: templates opened once, kept in memory, kept current.

Opening 50,000 sealed templates takes about a second, too slow for every visit, so the cameras
search an in-memory :class:`TemplateIndex` and rebuild it when something changed:

- the gallery database changed (an enrolment, an erasure, a withdrawn consent, a model
  adoption), seen through SQLite's ``PRAGMA data_version`` on a connection of our own: it
  changes when any other connection commits, at the cost of one query;
- a consent in force expires (the view knows the earliest expiry);
- ``REFRESH_SECONDS`` passed, as a safety net.

The check runs before every search, so an erased member, or one whose consent ran out, is
not recognised from the next decision on. The decision threshold is recomputed with the index
(``store_node.threshold``), and the face pipeline is reloaded when the store adopted another
recognition model. Templates live only in this process's memory.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from store_node.config import StorePaths
from store_node.face import FacePipeline
from store_node.gallery import Gallery
from store_node.gallery.recognition_model import recognition_model
from store_node.gallery.records import Match
from store_node.gallery.search import TemplateIndex
from store_node.threshold import OperatingThreshold, operating_threshold, reference_scores

REFRESH_SECONDS = 300.0
"""Longest time the view goes without rebuilding, whatever it saw."""

PipelineLoader = Callable[[], FacePipeline]


class GalleryView:
    """The searchable templates, threshold and face pipeline of a store, shared by its cameras.

    Args:
        paths: the store folder.
        target_fpir: the store's target false-positive identification rate.
        load_pipeline: builds the pipeline of the store's recognition model (called at the
            first refresh and after the store adopts another model).

    Thread-safe: cameras search from their own threads.
    """

    def __init__(
        self, paths: StorePaths, target_fpir: float, load_pipeline: PipelineLoader
    ) -> None:
        self._paths = paths
        self._target_fpir = target_fpir
        self._load_pipeline = load_pipeline
        self._lock = threading.Lock()
        self._pipeline: FacePipeline | None = None
        self._index = TemplateIndex([], np.empty((0, 128), dtype=np.float32))
        self._threshold: OperatingThreshold | None = None
        self._seen_version: int | None = None
        self._next_expiry: datetime | None = None
        self._built_at = 0.0
        self._watch = sqlite3.connect(
            f"{paths.database.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
        )

    def close(self) -> None:
        """Forget the templates and close the database connection."""
        with self._lock:
            self._index = TemplateIndex([], np.empty((0, 128), dtype=np.float32))
            self._watch.close()

    @property
    def pipeline(self) -> FacePipeline:
        """The face pipeline of the store's recognition model (loaded on first use)."""
        self.refresh()
        assert self._pipeline is not None
        return self._pipeline

    @property
    def threshold(self) -> float:
        """The decision threshold (cosine similarity) of the current index."""
        self.refresh()
        assert self._threshold is not None
        return self._threshold.value

    @property
    def templates(self) -> int:
        """Templates searched."""
        self.refresh()
        return len(self._index)

    def search(self, probes: NDArray[np.float32]) -> list[Match]:
        """The best member for each (Q, 128) probe at the store's threshold, or unknown."""
        self.refresh()
        with self._lock:
            assert self._threshold is not None
            return self._index.search(probes, self._threshold.value)

    def refresh(self, now: datetime | None = None) -> bool:
        """Rebuild the index if the gallery changed or a consent expired; whether it did."""
        now = now if now is not None else datetime.now(UTC)
        with self._lock:
            version = int(self._watch.execute("PRAGMA data_version").fetchone()[0])
            stale = (
                self._threshold is None
                or version != self._seen_version
                or (self._next_expiry is not None and now >= self._next_expiry)
                or time.monotonic() - self._built_at > REFRESH_SECONDS
            )
            if not stale:
                return False
            self._rebuild(now)
            self._seen_version = version
            return True

    def _rebuild(self, now: datetime) -> None:
        with Gallery.open(self._paths.database, self._paths.key) as gallery:
            model = recognition_model(gallery)
            wanted = model.model_version if model is not None else None
            if self._pipeline is None or (
                wanted is not None and wanted != self._pipeline.model_version
            ):
                self._pipeline = self._load_pipeline()
            version = self._pipeline.model_version
            owners, templates = gallery.searchable_templates(version, now)
            reference = reference_scores(gallery, version)
            expiries = [
                member.consent_expires_at
                for member in gallery.members(now)
                if member.consent_expires_at is not None and member.consent_expires_at > now
            ]
        self._threshold = operating_threshold(reference, templates, owners, self._target_fpir)
        self._index = TemplateIndex(owners, templates)
        self._next_expiry = min(expiries) if expiries else None
        self._built_at = time.monotonic()
