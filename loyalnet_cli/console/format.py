"""How the console writes times, ages, sizes and versions: short, so tables fit 80 columns.

Everything it prints about a member or a store comes from the network; callers wrap these
strings in ``rich.text.Text`` (never markup), so a member id such as ``M[bold]`` shows as typed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from google.protobuf.message import Message

UNSET = "—"


def when(message: Message, field: str) -> datetime | None:
    """The time in ``message.field`` (a protobuf Timestamp), or None when it was never set.

    proto3 sends an unset Timestamp as the epoch; ``HasField`` tells the two apart.
    """
    if not message.HasField(field):
        return None
    stamp = getattr(message, field)
    at: datetime = stamp.ToDatetime(tzinfo=UTC)
    return at


def age(then: datetime | None, now: datetime) -> str:
    """``12s ago``, ``5m ago``, ``3h ago``, ``2d ago``; ``never`` for None."""
    if then is None:
        return "never"
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 60:
        return f"{seconds}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m ago"
    if seconds < 86400:
        return f"{seconds // 3600}h ago"
    return f"{seconds // 86400}d ago"


def clock_time(at: datetime) -> str:
    """``14:02:07 UTC``: the chain spans time zones, so the console speaks UTC like the CLI."""
    return at.astimezone(UTC).strftime("%H:%M:%S UTC")


def version_name(version: int) -> str:
    """``v3``, or ``pretrained`` for version 0 (the model every store starts with)."""
    return f"v{version}" if version else "pretrained"


def size(n_bytes: int) -> str:
    """``41.2G``, ``512M``: disk free, in binary units."""
    value = float(n_bytes)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit in ("B", "K", "M") else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def number(value: float) -> str:
    """A metric value: four significant digits, whole numbers without a fraction."""
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}"


PREFERRED_METRICS = (
    "loss-last-epoch",
    "train-loss",
    "stores-trained",
    "num-examples",
    "round-seconds",
)
"""Shown first when a round or model reports them: what an admin watches a run for."""


def metric_names(names: Iterable[str]) -> list[str]:
    """``names`` in the order to show them: the preferred ones, then the others by name."""
    present = set(names)
    preferred = [name for name in PREFERRED_METRICS if name in present]
    return preferred + sorted(present - set(PREFERRED_METRICS))


def metrics_line(metrics: Mapping[str, float], limit: int = 3) -> str:
    """``train-loss 0.412 · num-examples 96``: the first ``limit`` metrics to show."""
    names = metric_names(metrics)[:limit]
    return " · ".join(f"{name} {number(metrics[name])}" for name in names)


def short_id(request_id: str) -> str:
    """The first 8 characters of an erasure request id: enough to tell requests apart."""
    return request_id[:8]
