"""Federated training runs and their rounds' aggregate metrics (over stores, never one's)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.registry import audit, validation
from coordinator.registry.errors import (
    RegistryConflictError,
    RegistryNotFoundError,
    RegistryValueError,
)
from coordinator.registry.records import RoundRecord, RunRecord
from coordinator.registry.schema import ModelVersionRow, RoundRow, RunRow

RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"


def _records(session: Session, runs: Sequence[RunRow]) -> list[RunRecord]:
    rounds: dict[int, list[RoundRecord]] = defaultdict(list)
    if runs:
        query = (
            select(RoundRow)
            .where(RoundRow.run_id.in_([run.run_id for run in runs]))
            .order_by(RoundRow.run_id, RoundRow.round)
        )
        for row in session.scalars(query):
            metrics = {str(k): float(v) for k, v in row.metrics.items()}
            rounds[row.run_id].append(RoundRecord(round=row.round, metrics=metrics))
    return [
        RunRecord(
            run_id=run.run_id,
            status=run.status,
            rounds_planned=run.rounds_planned,
            started_at=run.started_at,
            finished_at=run.finished_at,
            model_version=run.model_version,
            message=run.message,
            rounds=tuple(rounds[run.run_id]),
        )
        for run in runs
    ]


def _running(session: Session, run_id: int) -> RunRow:
    run = session.get(RunRow, run_id, with_for_update=True)
    if run is None:
        raise RegistryNotFoundError(f"no training run has id {run_id}")
    if run.status != RUNNING:
        raise RegistryConflictError(
            f"training run {run_id} already finished ({run.status}); start a new run instead"
        )
    return run


def start(session: Session, rounds_planned: int, at: datetime, actor: str) -> RunRecord:
    """Record a new run as ``running``; its id is the next integer (1, 2, ...)."""
    if isinstance(rounds_planned, bool) or not isinstance(rounds_planned, int):
        raise RegistryValueError(f"rounds_planned={rounds_planned!r} must be an integer >= 1")
    if rounds_planned < 1:
        raise RegistryValueError(f"rounds_planned={rounds_planned} must be >= 1")
    at = validation.aware(at)
    run = RunRow(status=RUNNING, rounds_planned=rounds_planned, started_at=at, message="")
    session.add(run)
    session.flush()
    audit.write(
        session, actor, audit.RUN_STARTED, str(run.run_id), {"rounds_planned": rounds_planned}, at
    )
    return _records(session, [run])[0]


def record_round(
    session: Session, run_id: int, round_number: int, metrics: Mapping[str, object]
) -> None:
    """Store (or replace, if the round is recorded again) a round's aggregate metrics.

    Raises:
        RegistryNotFoundError, RegistryConflictError: no such run, or it already finished.
    """
    if isinstance(round_number, bool) or not isinstance(round_number, int) or round_number < 1:
        raise RegistryValueError(f"round={round_number!r} must be an integer >= 1")
    clean = validation.metrics(metrics)
    _running(session, run_id)
    row = session.get(RoundRow, (run_id, round_number))
    if row is None:
        session.add(RoundRow(run_id=run_id, round=round_number, metrics=clean))
    else:
        row.metrics = clean
    session.flush()


def finish(
    session: Session,
    run_id: int,
    status: str,
    model_version: int | None,
    message: str,
    at: datetime,
    actor: str,
) -> RunRecord:
    """Mark a running run ``completed`` or ``failed``, with the version it produced.

    Raises:
        RegistryValueError: another status.
        RegistryNotFoundError: no such run, or ``model_version`` is not recorded.
        RegistryConflictError: the run already finished.
    """
    if status not in (COMPLETED, FAILED):
        raise RegistryValueError(f"status {status!r} must be {COMPLETED!r} or {FAILED!r}")
    if model_version is not None:
        validation.version(model_version, "model_version", allow_zero=False)
        if session.get(ModelVersionRow, model_version) is None:
            raise RegistryNotFoundError(
                f"run {run_id} names model v{model_version}, which is not recorded; add the "
                "model version first"
            )
    if not isinstance(message, str):
        raise RegistryValueError("message must be a string (empty when there is nothing to say)")
    at = validation.aware(at)
    run = _running(session, run_id)
    run.status = status
    run.model_version = model_version
    run.message = message
    run.finished_at = at
    session.flush()
    details = {"status": status, "model_version": model_version, "message": message[:1000]}
    audit.write(session, actor, audit.RUN_FINISHED, str(run_id), details, at)
    return _records(session, [run])[0]


def get(session: Session, run_id: int) -> RunRecord | None:
    run = session.get(RunRow, run_id)
    return None if run is None else _records(session, [run])[0]


def list_all(session: Session) -> list[RunRecord]:
    """Every run with its rounds, oldest first."""
    return _records(session, list(session.scalars(select(RunRow).order_by(RunRow.run_id))))
