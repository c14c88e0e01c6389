"""The numbers a store's heartbeat carries: aggregates only, never a member's data.

``StoreHealth`` (``loyalnet.chain.v1``) as :class:`HealthReporter` fills it:

| field | from |
| --- | --- |
| ``members_enrolled`` | member records in the gallery (``Gallery.members()``) |
| ``consents_recognition`` | members whose consent in force covers recognition |
| ``consents_model_improvement`` | members whose consent in force covers model improvement |
| ``has_visits``, ``*_visits_today`` | the cameras' :class:`VisitSource`; false/0 without one |
| ``model_version`` | the chain's model version the store runs (the outbox; 0 = pretrained) |
| ``model_sha256`` | the recognition model's tensor digest the gallery records (``state_digest``, |
| | the manifest's ``state_sha256``); "" for the pretrained model |
| ``key_ok`` | the store key opens the gallery (false, counts 0, when it does not open) |
| ``gallery_ok`` | ``Gallery.check()`` found no problem (false when the gallery does not open) |
| ``disk_free_bytes`` | free bytes of the store folder's file system |
| ``software_version`` | ``loyalnet.__version__`` |
| ``outbox_pending`` | receipts written, not yet acknowledged |

Counting members reads every member's consent chain and sealed name, and so does the integrity
check; at 10,000 members both take a while, and a heartbeat comes every few seconds. So the
counts are reused for ``counts_max_age`` seconds (and refreshed after every command the store
carries out, see :meth:`HealthReporter.refresh`), the check for ``check_every`` seconds.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from loyalnet import __version__
from loyalnet.chain.v1 import chain_pb2
from loyalnet.errors import LoyalnetError
from store_node.config import StorePaths
from store_node.gallery import Gallery, Purpose
from store_node.gallery.recognition_model import recognition_model
from store_node.sync.outbox import Outbox

GALLERY_CHECK_SECONDS = 600.0
"""How long an integrity check's result is reused (``Gallery.check`` is slow on big galleries)."""
COUNTS_MAX_AGE_SECONDS = 60.0
"""How long member counts are reused between commands."""


@dataclass(frozen=True)
class VisitCounts:
    """Visits the store's cameras counted today (UTC): members recognised, and everyone else."""

    member_visits: int
    unknown_visits: int


class VisitSource(Protocol):
    """Where the heartbeat gets today's visits from: the camera service (issue 8) implements it.

    Return None while the cameras have nothing to say (e.g. none running); the heartbeat then
    carries ``has_visits = false``.
    """

    def visits_today(self) -> VisitCounts | None: ...


@dataclass(frozen=True)
class _Counts:
    members: int
    recognition: int
    model_improvement: int
    key_ok: bool
    model_sha256: str


class HealthReporter:
    """Builds the heartbeat's ``StoreHealth`` for one store (see the module docstring).

    Used from the sync agent's thread only.
    """

    def __init__(
        self,
        paths: StorePaths,
        outbox: Outbox,
        *,
        visits: VisitSource | None = None,
        check_every: float = GALLERY_CHECK_SECONDS,
        counts_max_age: float = COUNTS_MAX_AGE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        Args:
            visits: the cameras' visit counts; None until the store has cameras.
            check_every: seconds an integrity check's result is reused.
            counts_max_age: seconds member counts are reused.
            monotonic: the clock (seconds) both ages are measured on.
        """
        self._paths = paths
        self._outbox = outbox
        self._visits = visits
        self._check_every = check_every
        self._counts_max_age = counts_max_age
        self._monotonic = monotonic
        self._counts: tuple[float, _Counts] | None = None
        self._check: tuple[float, bool] | None = None

    def refresh(self) -> None:
        """Count again at the next heartbeat (after a command changed the gallery)."""
        self._counts = None

    def health(self) -> chain_pb2.StoreHealth:
        """The store's numbers now; a gallery that cannot be read counts as not ok.

        Raises:
            OutboxError: the outbox cannot be read.
        """
        now = self._monotonic()
        if self._counts is None or now - self._counts[0] >= self._counts_max_age:
            self._counts = (now, self._count())
        counts = self._counts[1]
        if not counts.key_ok:
            gallery_ok = False
        else:
            if self._check is None or now - self._check[0] >= self._check_every:
                self._check = (now, self._gallery_ok())
            gallery_ok = self._check[1]
        health = chain_pb2.StoreHealth(
            members_enrolled=counts.members,
            consents_recognition=counts.recognition,
            consents_model_improvement=counts.model_improvement,
            model_version=self._outbox.model_version(),
            model_sha256=counts.model_sha256,
            key_ok=counts.key_ok,
            gallery_ok=gallery_ok,
            disk_free_bytes=_free_bytes(self._paths),
            software_version=__version__,
            outbox_pending=self._outbox.pending(),
        )
        visits = self._visits.visits_today() if self._visits is not None else None
        if visits is not None:
            health.has_visits = True
            health.member_visits_today = visits.member_visits
            health.unknown_visits_today = visits.unknown_visits
        return health

    def _count(self) -> _Counts:
        try:
            with Gallery.open(self._paths.database, self._paths.key) as gallery:
                summaries = gallery.members()
                model = recognition_model(gallery)
        except LoyalnetError:
            # A wrong key, or a gallery too damaged to tell: nothing can be counted either way.
            return _Counts(0, 0, 0, key_ok=False, model_sha256="")
        return _Counts(
            members=len(summaries),
            recognition=sum(Purpose.RECOGNITION in s.purposes for s in summaries),
            model_improvement=sum(Purpose.MODEL_IMPROVEMENT in s.purposes for s in summaries),
            key_ok=True,
            model_sha256=model.sha256 if model is not None and model.weights_file else "",
        )

    def _gallery_ok(self) -> bool:
        try:
            with Gallery.open(self._paths.database, self._paths.key) as gallery:
                return not gallery.check()
        except LoyalnetError:
            return False


def _free_bytes(paths: StorePaths) -> int:
    """Free bytes where the store folder lies; 0 when that cannot be read (worth a look)."""
    try:
        return shutil.disk_usage(paths.root).free
    except OSError:
        return 0
