"""A store in step with its chain's control plane: heartbeats, commands, signed receipts.

``loyalnet store serve`` (``store_node.serve``) runs a :class:`SyncAgent` for the store. It
reaches the coordinator over mutual TLS as the store itself (``connection``: the certificate
the chain issued for the store's node key, checked by ``certificate``), reports aggregate
numbers (``health``), carries out erasures and model adoptions (``commands``) and answers each
with a receipt signed by the node key, written to the store's outbox before it is sent
(``outbox``: ``sync.db``), so that none is lost to a restart or a broken connection.

Files this package keeps in the store folder: ``control-plane.crt`` (public; written by
``loyalnet store join --certificate``), ``sync.db`` and ``sync.db.lock`` (mode 0600, the outbox),
and, during a model download only, ``.sync-download-*/``.
"""

from store_node.sync.agent import AgentSettings, ConnectionState, CycleReport, SyncAgent
from store_node.sync.certificate import check_store_certificate
from store_node.sync.commands import CommandNotDone, CommandOutcome, CommandRunner
from store_node.sync.connection import ControlPlane, control_plane_of
from store_node.sync.health import HealthReporter, VisitCounts, VisitSource
from store_node.sync.outbox import (
    OUTBOX_NAME,
    CommandRecord,
    CommandState,
    Outbox,
    OutboxError,
    StoredReceipt,
)

__all__ = [
    "OUTBOX_NAME",
    "AgentSettings",
    "CommandNotDone",
    "CommandOutcome",
    "CommandRecord",
    "CommandRunner",
    "CommandState",
    "ConnectionState",
    "ControlPlane",
    "CycleReport",
    "HealthReporter",
    "Outbox",
    "OutboxError",
    "StoredReceipt",
    "SyncAgent",
    "VisitCounts",
    "VisitSource",
    "check_store_certificate",
    "control_plane_of",
]
