"""The console's way to the coordinator: one address, and fresh connections on demand.

Every worker opens its own connection (``connect()``) and closes it when done or when it
fails. A gRPC channel that failed backs off on its own for up to two minutes; a new one
tries at once, so a coordinator that is back is seen at the next retry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from coordinator.admin_client import AdminClient
from coordinator.home import CoordinatorHome
from loyalnet.chain.v1 import chain_pb2
from loyalnet.chain_tls import ClientIdentity

RPC_TIMEOUT_SECONDS = 5.0
"""Longest wait for one answer: a hung coordinator shows as unreachable after this."""

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class AdminSource(Protocol):
    """What the console calls on the ``Admin`` service (``AdminClient`` in production, a
    canned double in tests). Failures raise ``AdminError``."""

    def whoami(self) -> chain_pb2.WhoAmIReply: ...

    def stores(self) -> list[chain_pb2.Store]: ...

    def runs(self) -> list[chain_pb2.TrainingRun]: ...

    def models(self) -> chain_pb2.ListModelsReply: ...

    def erasures(self) -> list[chain_pb2.Erasure]: ...

    def audit(self, limit: int = 200, action: str = "") -> list[chain_pb2.AuditRecord]: ...

    def erase(self, member_id: str) -> chain_pb2.Erasure: ...

    def promote(self, version: int) -> chain_pb2.Rollout: ...

    def rollback(self) -> chain_pb2.Rollout: ...

    def train(self, rounds: int = 0) -> chain_pb2.TrainingRun: ...

    def events(self, after_event_id: int = 0) -> Iterator[chain_pb2.ChainEvent]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ConsoleLink:
    """Where the coordinator is (for the banner) and how to open a connection to it."""

    address: str
    connect: Callable[[], AdminSource]


def link_for_home(
    home: CoordinatorHome,
    address: str | None = None,
    certificate: Path | None = None,
    key: Path | None = None,
) -> ConsoleLink:
    """The link ``loyalnet admin`` would use: the folder's control port and ``tls/admin.*``.

    The files are read here, once, so a missing key fails before the screen is taken over.

    Raises:
        LoyalnetError: not a coordinator folder, or an unreadable or mismatched certificate.
    """
    config = home.read_config()
    identity = ClientIdentity.from_files(
        home.tls.ca_certificate,
        certificate or home.tls.admin_certificate,
        key or home.tls.admin_key,
    )
    target = address or f"127.0.0.1:{config.control_port}"

    def connect() -> AdminSource:
        return AdminClient(target, identity, timeout=RPC_TIMEOUT_SECONDS)

    return ConsoleLink(target, connect)
