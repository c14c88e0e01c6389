"""What a promotion or rollback would change, worded for its confirmation screen."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text

from loyalnet.chain.v1 import chain_pb2
from loyalnet_cli.console.format import version_name
from loyalnet_cli.console.snapshot import ChainSnapshot

PROMOTED = "model-promoted"
ROLLED_BACK = "model-rolled-back"
NAMED_STORES = 8


def rollback_target(records: Iterable[chain_pb2.AuditRecord]) -> int | None:
    """The version a rollback would go back to, None when there is nothing to undo.

    ListModels names only the promoted version; the one before it follows from replaying
    every promotion (pushed) and rollback (popped) in the audit log, oldest first, as the
    coordinator keeps them: a rollback undoes the newest promotion still standing.
    """
    standing: list[int] = []
    for record in sorted(records, key=lambda r: r.id):
        if record.action == PROMOTED and record.subject.isdigit():
            standing.append(int(record.subject))
        elif record.action == ROLLED_BACK and standing:
            standing.pop()
    if not standing:
        return None
    return standing[-2] if len(standing) > 1 else 0


def rollout_body(snapshot: ChainSnapshot, version: int, verb: str) -> Text:
    """``Every store is told to run v3. 2 of 3 stores will change: a, b.``"""
    trusted = [s for s in snapshot.stores if not s.revoked]
    changing = snapshot.stores_to_change(version)
    text = Text(f"{verb} tells every store to run ")
    text.append(version_name(version), style="bold")
    text.append(f". {len(changing)} of {len(trusted)} stores will change")
    if changing:
        named = ", ".join(changing[:NAMED_STORES])
        more = len(changing) - NAMED_STORES
        text.append(": ")
        text.append(named + (f" and {more} more" if more > 0 else ""), style="bold")
    text.append(".")
    offline = [s.name for s in trusted if not s.online and s.name in changing]
    if offline:
        text.append(f"\n{len(offline)} of them offline: they adopt it when they come back.")
    return text
