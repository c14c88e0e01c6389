"""What the registry hands out: frozen dataclasses, detached from any database session.

All times are timezone-aware UTC. Versions are the chain's model versions, 1, 2, ...; 0 is
the pretrained model every store starts with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

HealthValue = str | int | float | bool
"""One number (or short label, e.g. the software version) of a store's heartbeat."""

JsonScalar = str | int | float | bool | None
DetailValue = JsonScalar | list[JsonScalar]
"""One value of an audit record's details: a scalar or a short flat list of scalars."""

ERASED = "erased"
"""The outcome a store's receipt gives when it holds nothing more of the member."""
REFUSED = "refused"
"""The outcome of a store that declined a command (any outcome but ``erased`` counts so)."""


@dataclass(frozen=True)
class StoreRecord:
    """A store the chain admitted.

    Attributes:
        public_key_pem: the store's node key (ECDSA P-384, PEM); receipts are verified with it.
        certificate_sha256: hex sha256 of the store's client certificate (DER).
        revoked_at: when the chain stopped trusting it; None while trusted.
        last_seen: the newest heartbeat's time; None before the first one.
        last_health: that heartbeat's aggregate numbers (``StoreHealth`` fields by name).
        model_version: the model version the store said it recognises with; None before
            its first heartbeat, 0 for the pretrained model.
    """

    name: str
    public_key_pem: str
    certificate_sha256: str
    registered_at: datetime
    revoked_at: datetime | None
    last_seen: datetime | None
    last_health: dict[str, HealthValue] | None
    model_version: int | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class Heartbeat:
    """One store's heartbeat, as the servicer batches them.

    Attributes:
        store: the store's name (its certificate's CN).
        at: when the coordinator received it.
        health: aggregate numbers only (no member id, template or image); flat, each value a
            str (at most 200 characters), int, float or bool.
        model_version: the version the store recognises with, 0 = pretrained.
    """

    store: str
    at: datetime
    health: Mapping[str, HealthValue]
    model_version: int


@dataclass(frozen=True)
class HeartbeatResult:
    """What became of a batch of heartbeats.

    Attributes:
        recorded: heartbeats applied (one per store; an older one than the stored heartbeat
            leaves it as it is).
        unknown_stores: names that match no registered store, sorted.
        refused: store name -> why its heartbeat was dropped (health that is not aggregate
            numbers, a negative model version); the rest of the batch is recorded anyway.
    """

    recorded: int
    unknown_stores: tuple[str, ...] = ()
    refused: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CommandRecord:
    """A command addressed to one store.

    Attributes:
        kind: ``erase-member`` (payload ``request_id``, ``member_id``) or ``adopt-model``
            (payload ``version``, ``sha256``, ``size_bytes``, ``manifest_json``).
        acknowledged_at: when the store's (first) receipt arrived; None while pending.
        outcome: what the receipt said (``erased``, ``refused``, ``adopted``, ...).
        receipt_verified: the receipt's signature checked out against the store's key.
    """

    command_id: str
    store: str
    kind: str
    payload: dict[str, object]
    issued_at: datetime
    acknowledged_at: datetime | None
    outcome: str | None
    receipt_body: bytes | None
    receipt_signature: bytes | None
    receipt_verified: bool

    @property
    def pending(self) -> bool:
        return self.acknowledged_at is None


@dataclass(frozen=True)
class StoreErasure:
    """One store's part of a chain-wide erasure.

    Attributes:
        state: ``pending`` (no receipt yet), ``erased`` or ``refused`` (any other outcome).
        receipt_body: the store's signed receipt body as it sent it (canonical JSON bytes).
    """

    store: str
    command_id: str
    state: str
    receipt_verified: bool
    answered_at: datetime | None
    receipt_body: bytes | None


@dataclass(frozen=True)
class ErasureRecord:
    """A chain-wide erasure request and every store's answer so far.

    Attributes:
        complete: every store answered ``erased`` with a verified receipt; one refusal or
            one unverified receipt keeps it incomplete.
        completed_at: when the last such receipt arrived; None while incomplete.
    """

    request_id: str
    member_id: str
    requested_at: datetime
    requested_by: str
    completed_at: datetime | None
    stores: tuple[StoreErasure, ...]

    @property
    def complete(self) -> bool:
        return self.completed_at is not None


@dataclass(frozen=True)
class ModelVersionRecord:
    """A global model version the coordinator holds.

    Attributes:
        size_bytes: of the weights file, bytes.
        file_name: the weights file's name in the coordinator's model folder.
        manifest_json: the signed manifest, byte for byte as written (stores verify it).
        signing_key_id: which chain key signed it; None when unsigned.
        run_id: the training run that produced it; None when imported.
    """

    version: int
    sha256: str
    size_bytes: int
    file_name: str
    manifest_json: str
    signature_verified: bool
    signing_key_id: str | None
    created_at: datetime
    run_id: int | None


@dataclass(frozen=True)
class Rollout:
    """A promotion or rollback that happened.

    Attributes:
        version: the version stores are now told to run (0 = pretrained).
        previous_version: the one promoted before; equal to ``version`` when nothing changed
            (promoting the version already promoted).
        stores_commanded: how many stores got an ``adopt-model`` command for it.
    """

    version: int
    previous_version: int
    stores_commanded: int = 0


@dataclass(frozen=True)
class RoundRecord:
    """One finished round's aggregate metrics over stores (e.g. ``train-loss``)."""

    round: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class RunRecord:
    """A federated training run.

    Attributes:
        status: ``running``, ``completed`` or ``failed``.
        model_version: the version it produced; None while none.
        rounds: the rounds recorded so far, in round order.
    """

    run_id: int
    status: str
    rounds_planned: int
    started_at: datetime
    finished_at: datetime | None
    model_version: int | None
    message: str
    rounds: tuple[RoundRecord, ...] = field(default=())


@dataclass(frozen=True)
class AuditRecord:
    """One line of the audit log.

    Attributes:
        id: increases with every record; the live event stream resumes after one.
        actor: ``admin:NAME``, ``store:NAME`` or ``coordinator``.
        action: e.g. ``erasure-requested``, ``model-promoted``.
        subject: what it is about (a store name, request id, version, run id).
    """

    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    details: dict[str, DetailValue]
