"""The coordinator's registry: what the chain's control plane remembers, in SQL.

One database (SQLite by default, ``<coordinator home>/coordinator.db``; PostgreSQL for a
chain that runs several coordinator processes) holds:

``stores``
    Each admitted store by name (its certificate's CN): its node public key (receipts are
    verified with it), its certificate's sha256, when it was registered or revoked, and its
    last heartbeat: time, aggregate health numbers, the model version it runs.
``commands``
    What a store must do next, ``erase-member`` or ``adopt-model``, with a JSON payload; it
    is pending until the store acknowledges it with a signed receipt (kept byte for byte,
    with whether its signature verified). The first receipt stands.
``erasure_requests``
    A chain-wide erasure of one member: one ``erase-member`` command per store; complete
    (``completed_at``) when every store answered ``erased`` with a verified receipt.
``model_versions``
    Each global model the coordinator holds: sha256, size, file, the signed manifest
    exactly as written, who signed it, the run that made it.
``rollouts``
    Every promotion and rollback. Promotions not rolled back form a stack; its top is the
    promoted version (0, the pretrained model, when empty). Both queue ``adopt-model`` for
    every trusted store in the same transaction.
``training_runs`` / ``training_rounds``
    Federated runs and each round's aggregate metrics (over stores only).
``audit_log``
    Who (``admin:NAME``, ``store:NAME``, ``coordinator``) did what to which subject, when,
    with small plain-JSON details; written in the transaction of the change it records.
    Its ids commit in increasing order, which the live event stream relies on.

Nothing here holds a face, a template or an image: heartbeats are aggregate numbers, audit
details are refused unless they are short plain JSON, and the member's loyalty id appears
only on the erasure request that names it.

Use :func:`open_registry` and the :class:`Registry` it returns; it speaks the dataclasses of
:mod:`coordinator.registry.records` and never hands out database rows. All times are
timezone-aware UTC.

Migration policy: the schema is versioned with Alembic (``migrations/``, shipped in the
package). ``open_registry`` upgrades the database to this code's newest revision every time
it opens it, inside one transaction under a lock, so two coordinators starting together do
not race; a database already at the newest revision is left untouched. It never downgrades:
a database whose revision this code does not know (written by a newer loyalnet) is refused
with :class:`RegistrySchemaError`. A released revision is never edited; every change to
``schema.py`` comes with a new revision that works on SQLite (batch mode) and PostgreSQL,
and the tests check the migrated tables match the models.
"""

from coordinator.registry.database import Registry, default_database_url, open_registry
from coordinator.registry.errors import (
    RegistryConflictError,
    RegistryError,
    RegistryNotFoundError,
    RegistrySchemaError,
    RegistryUnavailableError,
    RegistryValueError,
    WrongStoreError,
)
from coordinator.registry.records import (
    ERASED,
    REFUSED,
    AuditRecord,
    CommandRecord,
    ErasureRecord,
    Heartbeat,
    HeartbeatResult,
    ModelVersionRecord,
    Rollout,
    RoundRecord,
    RunRecord,
    StoreErasure,
    StoreRecord,
)

__all__ = [
    "ERASED",
    "REFUSED",
    "AuditRecord",
    "CommandRecord",
    "ErasureRecord",
    "Heartbeat",
    "HeartbeatResult",
    "ModelVersionRecord",
    "Registry",
    "RegistryConflictError",
    "RegistryError",
    "RegistryNotFoundError",
    "RegistrySchemaError",
    "RegistryUnavailableError",
    "RegistryValueError",
    "Rollout",
    "RoundRecord",
    "RunRecord",
    "StoreErasure",
    "StoreRecord",
    "WrongStoreError",
    "default_database_url",
    "open_registry",
]
