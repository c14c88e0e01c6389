"""``loyalnet admin``: the chain's control plane from a terminal, for people and scripts.

Every command talks to a running coordinator (``loyalnet coordinator serve``) over mutual TLS
with an admin's or viewer's certificate. Tables for people; ``--json`` prints one JSON object
for scripts (field names as in ``protos/loyalnet/chain/v1/chain.proto``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from coordinator.admin_client import AdminClient
from coordinator.home import CoordinatorHome
from loyalnet.chain.v1 import chain_pb2
from loyalnet.settings import COORDINATOR_ENV, Settings

admin_app = typer.Typer(
    help=(
        "Operate the chain through its coordinator's control plane: stores, model versions, "
        "training runs, erasures, the audit log. Needs `loyalnet coordinator serve` running."
    ),
    no_args_is_help=True,
)
out = Console(soft_wrap=True, highlight=False)
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


@dataclass
class AdminTarget:
    home: CoordinatorHome
    address: str | None
    certificate: Path | None
    key: Path | None

    def client(self) -> AdminClient:
        return AdminClient.for_home(
            self.home, address=self.address, certificate=self.certificate, key=self.key
        )


@admin_app.callback()
def _target(
    context: typer.Context,
    folder: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help=f"The coordinator folder (default: ${COORDINATOR_ENV}, the config file's "
            "coordinator_dir, or ./coordinator-home): its CA, control port and admin.crt.",
            show_default=False,
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(help="HOST:PORT of the control plane (default: 127.0.0.1:control_port)."),
    ] = None,
    certificate: Annotated[
        Path | None,
        typer.Option(help="Your certificate (default: the folder's tls/admin.crt)."),
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="Your private key (default: tls/admin.key).")
    ] = None,
) -> None:
    home = CoordinatorHome(folder or Settings.from_environment().coordinator_dir)
    context.obj = AdminTarget(home, address, certificate, key)


@admin_app.command()
def whoami(context: typer.Context, as_json: JsonOption = False) -> None:
    """Who the certificate makes you, and in which chain."""
    with context.obj.client() as client:
        reply = client.whoami()
    if as_json:
        _print_json(reply)
        return
    out.print(f"{escape(reply.name)} ({reply.role}) in chain {escape(reply.chain)}")


@admin_app.command()
def stores(context: typer.Context, as_json: JsonOption = False) -> None:
    """The chain's stores: online or not, model version, members, consents, health."""
    with context.obj.client() as client:
        found = client.stores()
    if as_json:
        print(json.dumps({"stores": [_dict(store) for store in found]}))
        return
    table = Table(
        "store",
        "state",
        "last seen",
        "model",
        "members",
        "consents rec./impr.",
        "key",
        "gallery",
        "commands waiting",
        title="stores",
    )
    for store in found:
        health = store.health
        state = (
            "[red]revoked[/]" if store.revoked else "online" if store.online else "[red]offline[/]"
        )
        table.add_row(
            escape(store.name),
            state,
            _when(store.last_seen) if store.HasField("last_seen") else "never",
            f"v{health.model_version}" if health.model_version else "pretrained",
            str(health.members_enrolled),
            f"{health.consents_recognition} / {health.consents_model_improvement}",
            "ok" if health.key_ok else "[red]no[/]",
            "ok" if health.gallery_ok else "[red]check[/]",
            str(store.pending_commands),
        )
    out.print(table)


@admin_app.command()
def runs(context: typer.Context, as_json: JsonOption = False) -> None:
    """Training runs and their rounds' aggregate metrics."""
    with context.obj.client() as client:
        found = client.runs()
    if as_json:
        print(json.dumps({"runs": [_dict(run) for run in found]}))
        return
    table = Table(
        "run",
        "status",
        "rounds",
        "started",
        "finished",
        "model",
        "last round",
        title="training runs",
    )
    for run in found:
        last = run.rounds[-1].metrics if run.rounds else {}
        table.add_row(
            str(run.run_id),
            run.status,
            f"{len(run.rounds)}/{run.rounds_planned}",
            _when(run.started_at),
            _when(run.finished_at) if run.HasField("finished_at") else "",
            f"v{run.model_version}" if run.model_version else "",
            escape(", ".join(f"{k} {v:.4g}" for k, v in sorted(last.items())[:4])),
        )
    out.print(table)


@admin_app.command()
def models(context: typer.Context, as_json: JsonOption = False) -> None:
    """Model versions: signed or not, promoted or not, which stores run each."""
    with context.obj.client() as client:
        reply = client.models()
    if as_json:
        _print_json(reply)
        return
    table = Table(
        "version",
        "created",
        "signed",
        "promoted",
        "stores running",
        "sha256",
        title="model versions",
    )
    for model in reply.models:
        table.add_row(
            f"v{model.version}",
            _when(model.created_at),
            "verified" if model.signature_verified else "[red]no[/]",
            "[bold]yes[/]" if model.promoted else "",
            str(len(model.stores_running)),
            model.sha256[:12] + "…",
        )
    out.print(table)
    promoted = reply.promoted_version
    out.print(
        f"stores are told to run: {'v' + str(promoted) if promoted else 'the pretrained model'}"
    )


@admin_app.command()
def erasures(context: typer.Context, as_json: JsonOption = False) -> None:
    """Erasure requests and, per store, whether its signed receipt arrived and verified."""
    with context.obj.client() as client:
        found = client.erasures()
    if as_json:
        print(json.dumps({"erasures": [_dict(erasure) for erasure in found]}))
        return
    table = Table(
        "request", "member", "requested", "by", "stores answered", "state", title="erasure requests"
    )
    for erasure in found:
        answered = sum(1 for s in erasure.stores if s.state != "pending")
        table.add_row(
            erasure.request_id[:8],
            escape(erasure.member_id),
            _when(erasure.requested_at),
            escape(erasure.requested_by),
            f"{answered}/{len(erasure.stores)}",
            "[green]complete[/]" if erasure.complete else "pending",
        )
    out.print(table)


@admin_app.command()
def audit(
    context: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many records (1-1000).")] = 50,
    action: Annotated[str, typer.Option(help="Only this action, e.g. model-promoted.")] = "",
    as_json: JsonOption = False,
) -> None:
    """The coordinator's audit log, newest first."""
    with context.obj.client() as client:
        records = client.audit(limit, action)
    if as_json:
        print(json.dumps({"records": [_dict(record) for record in records]}))
        return
    table = Table("id", "at", "actor", "action", "subject", "details", title="audit log")
    for record in records:
        table.add_row(
            str(record.id),
            _when(record.at),
            escape(record.actor),
            escape(record.action),
            escape(record.subject),
            escape(record.details_json),
        )
    out.print(table)


@admin_app.command()
def erase(
    context: typer.Context,
    member: Annotated[str, typer.Argument(help="The loyalty member id to forget in every store.")],
    wait: Annotated[
        float,
        typer.Option(help="Seconds to wait for every store's receipt (0: do not wait).", min=0),
    ] = 0.0,
    as_json: JsonOption = False,
) -> None:
    """Forget a member in every store of the chain; each store answers with a signed receipt.

    Stores that are offline get the request when they come back; the request is complete once
    every store's receipt arrived and verified. Exit code 3 when --wait ran out first.
    """
    with context.obj.client() as client:
        erasure = client.erase(member)
        deadline = time.monotonic() + wait
        while not erasure.complete and time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            erasure = client.erasure(erasure.request_id)
    if as_json:
        _print_json(erasure)
    else:
        answered = sum(1 for s in erasure.stores if s.state != "pending")
        out.print(
            f"erasure {erasure.request_id} of member {escape(erasure.member_id)}: "
            f"{answered} of {len(erasure.stores)} stores answered"
            + (" — [green]complete[/]" if erasure.complete else "")
        )
        for answer in erasure.stores:
            verified = " (receipt verified)" if answer.receipt_verified else ""
            out.print(f"  {escape(answer.store)}: {answer.state}{verified}")
    if wait and not erasure.complete:
        raise typer.Exit(3)


@admin_app.command()
def promote(
    context: typer.Context,
    version: Annotated[
        int, typer.Argument(help="The model version every store should run.", min=0)
    ],
    as_json: JsonOption = False,
) -> None:
    """Roll a signed model version out to every store (0: back to the pretrained model)."""
    with context.obj.client() as client:
        rollout = client.promote(version)
    _print_rollout(rollout, as_json)


@admin_app.command()
def rollback(context: typer.Context, as_json: JsonOption = False) -> None:
    """Go back to the model version promoted before the current one."""
    with context.obj.client() as client:
        rollout = client.rollback()
    _print_rollout(rollout, as_json)


@admin_app.command()
def train(
    context: typer.Context,
    rounds: Annotated[int, typer.Option(help="Federated rounds (0: the default).", min=0)] = 0,
    strategy: Annotated[
        str, typer.Option(help="fedavg, fedprox, trimmed-mean or median (empty: fedavg).")
    ] = "",
    local_epochs: Annotated[
        int, typer.Option(min=0, help="Passes over each store's crops per round (0: 1).")
    ] = 0,
    learning_rate: Annotated[
        float, typer.Option(min=0.0, help="The stores' learning rate (0: 0.001).")
    ] = 0.0,
    min_stores: Annotated[
        int, typer.Option(min=0, help="A round waits for this many stores (0: 2).")
    ] = 0,
    update_encoding: Annotated[
        str,
        typer.Option(
            help="How stores send their update: float32, or float16-delta (its change from "
            "the global model in float16: half the bytes). Empty: float32."
        ),
    ] = "",
    release_mix: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="The share of the run's change from the pretrained model that the model "
            "version keeps, in (0, 1]: 0.7 keeps most of the gain and gives back most of what "
            "fine-tuning costs on cameras no store showed (WiSE-FT). 0: 1, the last round as is.",
        ),
    ] = 0.0,
    as_json: JsonOption = False,
) -> None:
    """Start a federated training run on the connected stores; `loyalnet admin runs` follows it.

    Each store still applies its own limits (store.toml [training]) and declines a round that
    asks for more epochs or a higher learning rate than it allows.
    """
    with context.obj.client() as client:
        run = client.train(
            rounds,
            strategy=strategy,
            local_epochs=local_epochs,
            learning_rate=learning_rate,
            min_stores=min_stores,
            update_encoding=update_encoding,
            release_mix=release_mix,
        )
    if as_json:
        _print_json(run)
        return
    out.print(f"training run {run.run_id} started: {run.rounds_planned} rounds")


def _print_rollout(rollout: chain_pb2.Rollout, as_json: bool) -> None:
    if as_json:
        _print_json(rollout)
        return
    name = f"v{rollout.version}" if rollout.version else "the pretrained model"
    was = f"v{rollout.previous_version}" if rollout.previous_version else "the pretrained model"
    out.print(f"{name} rolled out (was {was}): {rollout.stores_commanded} stores told to adopt it")


def _dict(message: Message) -> dict[str, object]:
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _print_json(message: Message) -> None:
    print(json.dumps(_dict(message)))


def _when(stamp: Timestamp) -> str:
    at = stamp.ToDatetime(tzinfo=UTC)
    age = datetime.now(UTC) - at
    if age.total_seconds() < 120:
        return f"{max(0, int(age.total_seconds()))} s ago"
    return at.strftime("%Y-%m-%d %H:%M UTC")
