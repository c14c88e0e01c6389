"""Screens that follow the data: the app hands each fresh snapshot to every one on the stack."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from loyalnet_cli.console.snapshot import ChainSnapshot


@runtime_checkable
class ShowsSnapshot(Protocol):
    def show_snapshot(self, snapshot: ChainSnapshot, now: datetime) -> None:
        """Show ``snapshot`` as of ``now`` (the banner, not this, says when it is old)."""
        ...
