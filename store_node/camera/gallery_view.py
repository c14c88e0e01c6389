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
recognition model, in a background rebuild (see :class:`GalleryView`). Templates live only in
this process's memory.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
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

log = logging.getLogger("loyalnet.store.cameras")

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

    The first refresh builds everything before it returns. Later ones never make a camera
    wait for the rebuild (about 2 s at 50,000 templates): the members who may no longer be
    named (erased, withdrawn, expired) leave the index at once, from a cheap query of the
    consents, and the full rebuild (new templates, threshold, model) runs in a background
    thread and is swapped in when done. Thread-safe: cameras search from their own threads.
    """

    def __init__(
        self, paths: StorePaths, target_fpir: float, load_pipeline: PipelineLoader
    ) -> None:
        self._paths = paths
        self._target_fpir = target_fpir
        self._load_pipeline = load_pipeline
        self._lock = threading.Lock()
        self._state: _Built | None = None
        self._seen_version: int | None = None
        self._rebuilding: threading.Thread | None = None
        self._watch = sqlite3.connect(
            f"{paths.database.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
        )

    def close(self) -> None:
        """Forget the templates and close the database connection."""
        with self._lock:
            self._state = None
            self._watch.close()
        rebuilding = self._rebuilding
        if rebuilding is not None:
            rebuilding.join()

    @property
    def pipeline(self) -> FacePipeline:
        """The face pipeline of the store's recognition model (loaded on first use)."""
        return self._current().pipeline

    @property
    def threshold(self) -> float:
        """The decision threshold (cosine similarity) of the current index."""
        return self._current().threshold.value

    @property
    def templates(self) -> int:
        """Templates searched."""
        return len(self._current().index)

    def search(self, probes: NDArray[np.float32], model_version: str | None = None) -> list[Match]:
        """The best member for each (Q, 128) probe at the store's threshold, or unknown.

        ``model_version``: the model the probes were embedded with; when the store has just
        switched to another, the probes are answered unknown rather than compared across
        models.
        """
        state = self._current()
        threshold = state.threshold.value
        if model_version is not None and model_version != state.pipeline.model_version:
            return [Match(None, "", -1.0, threshold) for _ in range(probes.shape[0])]
        return state.index.search(probes, threshold)

    def refresh(self, now: datetime | None = None) -> bool:
        """Bring the view up to date if the gallery changed or a consent expired; whether it
        changed anything now (a background rebuild may follow)."""
        now = now if now is not None else datetime.now(UTC)
        with self._lock:
            version = int(self._watch.execute("PRAGMA data_version").fetchone()[0])
            state = self._state
            if state is None:
                self._state = self._build(now)
                self._seen_version = version
                return True
            stale = (
                version != self._seen_version
                or (state.next_expiry is not None and now >= state.next_expiry)
                or time.monotonic() - state.built_at > REFRESH_SECONDS
            )
            if not stale:
                return False
            self._seen_version = version
            self._state = state.only(self._recognisable(now))
            if self._rebuilding is None or not self._rebuilding.is_alive():
                self._rebuilding = threading.Thread(
                    target=self._rebuild, name="gallery-view-rebuild", daemon=True
                )
                self._rebuilding.start()
            return True

    def wait_for_rebuild(self, timeout: float | None = None) -> None:
        """Wait until a background rebuild in progress has been swapped in."""
        rebuilding = self._rebuilding
        if rebuilding is not None:
            rebuilding.join(timeout)

    def _current(self) -> _Built:
        self.refresh()
        state = self._state
        if state is None:
            raise RuntimeError("the gallery view was closed")
        return state

    def _recognisable(self, now: datetime) -> set[str]:
        with Gallery.open(self._paths.database, self._paths.key) as gallery:
            return gallery.recognisable_members(now)

    def _rebuild(self) -> None:
        try:
            while True:
                with self._lock:
                    version = self._seen_version
                built = self._build(datetime.now(UTC))
                with self._lock:
                    if self._state is None:  # closed meanwhile
                        return
                    if version == self._seen_version:
                        self._state = built
                        return
                # The gallery changed again while building: build once more.
        except Exception:
            log.exception("rebuilding the cameras' gallery view failed; the last one stays")

    def _build(self, now: datetime) -> _Built:
        with Gallery.open(self._paths.database, self._paths.key) as gallery:
            model = recognition_model(gallery)
            wanted = model.model_version if model is not None else None
            previous = self._state.pipeline if self._state is not None else None
            if previous is None or (wanted is not None and wanted != previous.model_version):
                pipeline = self._load_pipeline()
            else:
                pipeline = previous
            version = pipeline.model_version
            owners, templates = gallery.searchable_templates(version, now)
            reference = reference_scores(gallery, version)
            expiries = [
                member.consent_expires_at
                for member in gallery.members(now)
                if member.consent_expires_at is not None and member.consent_expires_at > now
            ]
        return _Built(
            pipeline=pipeline,
            index=TemplateIndex(owners, templates),
            owners=tuple(owners),
            threshold=operating_threshold(reference, templates, owners, self._target_fpir),
            next_expiry=min(expiries) if expiries else None,
            built_at=time.monotonic(),
        )


@dataclass(frozen=True)
class _Built:
    """One consistent state of the view: never changed, replaced whole."""

    pipeline: FacePipeline
    index: TemplateIndex
    owners: tuple[str, ...]
    threshold: OperatingThreshold
    next_expiry: datetime | None
    built_at: float

    def only(self, members: set[str]) -> _Built:
        """The same state without the templates of members not in ``members``."""
        keep = np.fromiter((owner in members for owner in self.owners), dtype=bool)
        if keep.all():
            return replace(self, built_at=self.built_at)
        owners = tuple(owner for owner, kept in zip(self.owners, keep, strict=True) if kept)
        return replace(self, index=TemplateIndex(owners, self.index.templates[keep]), owners=owners)
