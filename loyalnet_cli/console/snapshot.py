"""One consistent-enough picture of the chain, fetched in one go and shown by every view."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from loyalnet.chain.v1 import chain_pb2
from loyalnet_cli.console.link import AdminSource, Clock

AUDIT_RECORDS = 500
"""Audit records kept: the newest ones, enough for a store's recent history."""


@dataclass(frozen=True)
class ChainSnapshot:
    """What the coordinator said at ``fetched_at``; the views only ever read this."""

    me: chain_pb2.WhoAmIReply
    stores: tuple[chain_pb2.Store, ...]
    runs: tuple[chain_pb2.TrainingRun, ...]
    models: chain_pb2.ListModelsReply
    erasures: tuple[chain_pb2.Erasure, ...]
    audit: tuple[chain_pb2.AuditRecord, ...]
    fetched_at: datetime

    @property
    def read_only(self) -> bool:
        return self.me.role != "admin"

    def store(self, name: str) -> chain_pb2.Store | None:
        return next((s for s in self.stores if s.name == name), None)

    def erasure(self, request_id: str) -> chain_pb2.Erasure | None:
        return next((e for e in self.erasures if e.request_id == request_id), None)

    def current_run(self) -> chain_pb2.TrainingRun | None:
        """The newest run still training, else the newest run of all (None before any)."""
        running = [r for r in self.runs if r.status == "running"]
        pool = running or list(self.runs)
        return max(pool, key=lambda r: r.run_id, default=None)

    def stores_to_change(self, version: int) -> list[str]:
        """Stores a rollout of ``version`` would change: trusted ones running another one."""
        return [s.name for s in self.stores if not s.revoked and s.health.model_version != version]


def fetch_snapshot(client: AdminSource, clock: Clock) -> ChainSnapshot:
    """Ask the coordinator for everything the views show (six calls, each bounded).

    Raises:
        AdminError: the coordinator is unreachable or refused a call.
    """
    return ChainSnapshot(
        me=client.whoami(),
        stores=tuple(client.stores()),
        runs=tuple(client.runs()),
        models=client.models(),
        erasures=tuple(client.erasures()),
        audit=tuple(client.audit(AUDIT_RECORDS)),
        fetched_at=clock(),
    )
