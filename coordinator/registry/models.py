"""Model versions and their rollouts: which global model the chain's stores should run.

Promotions form a stack. ``promote(v)`` pushes ``v``; ``rollback()`` pops the top and goes
back to the promotion below it, or to 0 (the pretrained model) when none is left; the
promoted version is the top. So v1, v2, rollback, rollback gives v1 then 0, and a third
rollback is refused. Both queue an ``adopt-model`` command for every trusted store in the
same transaction, so a promotion is never recorded without its commands, nor the reverse.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.registry import audit, commands, locks, stores, validation
from coordinator.registry.errors import (
    RegistryConflictError,
    RegistryNotFoundError,
    RegistryValueError,
)
from coordinator.registry.records import ModelVersionRecord, Rollout
from coordinator.registry.schema import ModelVersionRow, RolloutRow, RunRow

PROMOTE = "promote"
ROLLBACK = "rollback"


def record(row: ModelVersionRow) -> ModelVersionRecord:
    return ModelVersionRecord(
        version=row.version,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        file_name=row.file_name,
        manifest_json=row.manifest_json,
        signature_verified=row.signature_verified,
        signing_key_id=row.signing_key_id,
        created_at=row.created_at,
        run_id=row.run_id,
    )


def add(
    session: Session,
    *,
    version: int,
    sha256: str,
    size_bytes: int,
    file_name: str,
    manifest_json: str,
    signature_verified: bool,
    signing_key_id: str | None,
    created_at: datetime,
    run_id: int | None,
    actor: str,
) -> ModelVersionRecord:
    """Record a model version; the same version with the same sha256 again is a no-op.

    Raises:
        RegistryConflictError: the version is recorded with another sha256 (two different
            models must never share a number: stores cache weights by version).
        RegistryNotFoundError: ``run_id`` names no run.
    """
    version = validation.version(version, allow_zero=False)
    sha256 = sha256.lower()
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise RegistryValueError(f"model v{version}: sha256 {sha256!r:.80} is not 64 hex digits")
    if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or size_bytes < 0:
        raise RegistryValueError(f"model v{version}: size_bytes={size_bytes!r} must be >= 0")
    file_name = validation.text(file_name, "model file name", 255)
    if signing_key_id is not None:
        signing_key_id = validation.text(signing_key_id, "signing key id", 200)
    created_at = validation.aware(created_at, "created_at")
    locks.take(session, locks.Lock.MODEL_VERSIONS)
    existing = session.get(ModelVersionRow, version)
    if existing is not None:
        if existing.sha256 != sha256:
            raise RegistryConflictError(
                f"model v{version} is already recorded with sha256 {existing.sha256}, not "
                f"{sha256}; save the new model under the next free version number"
            )
        return record(existing)
    if run_id is not None and session.get(RunRow, run_id) is None:
        raise RegistryNotFoundError(f"model v{version} names run {run_id}, which does not exist")
    row = ModelVersionRow(
        version=version,
        sha256=sha256,
        size_bytes=size_bytes,
        file_name=file_name,
        manifest_json=manifest_json,
        signature_verified=bool(signature_verified),
        signing_key_id=signing_key_id,
        created_at=created_at,
        run_id=run_id,
    )
    session.add(row)
    session.flush()
    details = {
        "sha256": sha256,
        "size_bytes": size_bytes,
        "signature_verified": bool(signature_verified),
        "run_id": run_id,
    }
    audit.write(session, actor, audit.MODEL_ADDED, str(version), details, created_at)
    return record(row)


def get(session: Session, version: int) -> ModelVersionRecord | None:
    row = session.get(ModelVersionRow, version)
    return None if row is None else record(row)


def list_all(session: Session) -> list[ModelVersionRecord]:
    """Every recorded version, lowest first."""
    query = select(ModelVersionRow).order_by(ModelVersionRow.version)
    return [record(row) for row in session.scalars(query)]


def _stack_top(session: Session, count: int) -> list[RolloutRow]:
    """The top ``count`` promotions not rolled back, newest first."""
    query = (
        select(RolloutRow)
        .where(RolloutRow.kind == PROMOTE, RolloutRow.rolled_back_at.is_(None))
        .order_by(RolloutRow.id.desc())
        .limit(count)
    )
    return list(session.scalars(query))


def promoted(session: Session) -> int:
    """The version stores are told to run; 0 (pretrained) before any promotion."""
    top = _stack_top(session, 1)
    return top[0].version if top else 0


def _command_stores(session: Session, version: int, at: datetime) -> int:
    """Queue ``adopt-model`` for ``version`` to every trusted store; returns how many."""
    if version == 0:
        payload = commands.adopt_payload(0, "", 0, "")
    else:
        row = session.get(ModelVersionRow, version)
        if row is None:
            raise RegistryNotFoundError(
                f"model v{version} is not recorded; add it before promoting it"
            )
        payload = commands.adopt_payload(version, row.sha256, row.size_bytes, row.manifest_json)
    names = stores.trusted_names(session)
    session.add_all(commands.new_rows(names, commands.ADOPT_MODEL, payload, at))
    return len(names)


def promote(session: Session, version: int, by: str, at: datetime) -> Rollout:
    """Make ``version`` (0 = pretrained) the one every trusted store is told to run.

    Promoting the version already promoted changes nothing and returns
    ``Rollout(v, v, 0)``, so an admin's retry does not stack it twice.

    Raises:
        RegistryNotFoundError: the version is not recorded.
    """
    version = validation.version(version)
    by = validation.text(by, "promoted_by")
    at = validation.aware(at)
    if version and session.get(ModelVersionRow, version) is None:
        raise RegistryNotFoundError(
            f"model v{version} is not recorded; list the model versions and promote one of them"
        )
    # Two admins promoting at once must each see the other's promotion as the previous one.
    locks.take(session, locks.Lock.ROLLOUTS)
    current = promoted(session)
    if version == current:
        return Rollout(version=version, previous_version=current, stores_commanded=0)
    commanded = _command_stores(session, version, at)
    session.add(
        RolloutRow(
            kind=PROMOTE,
            version=version,
            previous_version=current,
            promoted_at=at,
            promoted_by=by,
            stores_commanded=commanded,
        )
    )
    session.flush()
    details = {"previous_version": current, "stores_commanded": commanded}
    audit.write(session, by, audit.MODEL_PROMOTED, str(version), details, at)
    return Rollout(version=version, previous_version=current, stores_commanded=commanded)


def rollback(session: Session, by: str, at: datetime) -> Rollout:
    """Undo the newest promotion still standing: back to the one promoted before it, or to
    0 (pretrained) when it was the only one.

    Raises:
        RegistryConflictError: no promotion is left to undo (stores already run, or were
            last told to run, the pretrained model).
    """
    by = validation.text(by, "promoted_by")
    at = validation.aware(at)
    locks.take(session, locks.Lock.ROLLOUTS)
    top = _stack_top(session, 2)
    if not top:
        raise RegistryConflictError(
            "there is nothing to roll back to: no promotion is standing and stores run the "
            "pretrained model (0); promote a version instead"
        )
    undone = top[0]
    target = top[1].version if len(top) > 1 else 0
    undone.rolled_back_at = at
    commanded = _command_stores(session, target, at)
    session.add(
        RolloutRow(
            kind=ROLLBACK,
            version=target,
            previous_version=undone.version,
            promoted_at=at,
            promoted_by=by,
            stores_commanded=commanded,
        )
    )
    session.flush()
    details = {"previous_version": undone.version, "stores_commanded": commanded}
    audit.write(session, by, audit.MODEL_ROLLED_BACK, str(target), details, at)
    return Rollout(version=target, previous_version=undone.version, stores_commanded=commanded)
