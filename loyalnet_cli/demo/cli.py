"""``loyalnet demo``: the federated demo, and ``loyalnet demo store`` for one store alone."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from coordinator.run_config import STRATEGIES
from loyalnet.settings import Settings
from loyalnet.update_encoding import ENCODINGS
from loyalnet_cli.demo.chain import DemoChain
from loyalnet_cli.demo.federated import FederatedDemoOptions, run_federated_demo
from loyalnet_cli.demo.store_walkthrough import store_demo
from loyalnet_cli.demo.stores import DemoPlan

demo_app = typer.Typer(
    help=(
        "Walkthroughs on real faces from the shared data. Without a sub-command: the federated "
        "demo. A chain runs on 127.0.0.1 (`coordinator serve`, and 3 stores each running "
        "`store serve` and a SuperNode); it trains the shared model through the control plane, "
        "promotes it, and each store measures recognition before and after. The demo prints the "
        "command that opens the admins' console on it; --keep leaves it running until Ctrl-C."
    ),
    invoke_without_command=True,
)
demo_app.command("store")(store_demo)

out = Console()
err = Console(stderr=True, log_path=False)


@demo_app.callback()
def federated(
    context: typer.Context,
    rounds: Annotated[int, typer.Option(min=1, help="Federated rounds.")] = 3,
    local_epochs: Annotated[
        int, typer.Option(min=1, help="Passes over each store's crops per round.")
    ] = 1,
    members: Annotated[int, typer.Option(min=5, help="Members per store.")] = 12,
    strategy: Annotated[
        str,
        typer.Option(
            help="fedavg, fedprox, or the robust trimmed-mean or median (each store weighs "
            "the same)."
        ),
    ] = "fedavg",
    update_encoding: Annotated[
        str,
        typer.Option(
            help="How stores send their trained model: float16-delta (its change from the "
            "global model in float16: half the bytes), or float32."
        ),
    ] = "float16-delta",
    workdir: Annotated[
        Path | None,
        typer.Option(
            help="Keep stores, coordinator and logs in this new folder "
            "(default: a temporary folder, removed at the end)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only the JSON summary at the end.")
    ] = False,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep",
            help="Keep the chain running after the demo, for the console and `loyalnet admin`, "
            "until Ctrl-C.",
        ),
    ] = False,
) -> None:
    """Three stores with different cameras train the shared face model; no face leaves a store.

    The chain runs as real processes on 127.0.0.1: `loyalnet coordinator serve` and, per
    store, `loyalnet store serve` and a SuperNode. A training run is started and its model
    promoted through the control plane; the stores adopt it by themselves. Shows, per store,
    identification of members' held-out photos (rank-1) and strangers accepted, before and
    after training, and the bytes each store sent per round. The demo prints the command that
    opens the admins' console on the running chain; --keep keeps it running afterwards.
    """
    if context.invoked_subcommand is not None:
        return
    if strategy not in STRATEGIES:
        raise typer.BadParameter(f"choose one of {', '.join(STRATEGIES)}", param_hint="--strategy")
    if update_encoding not in ENCODINGS:
        raise typer.BadParameter(
            f"choose one of {', '.join(ENCODINGS)}", param_hint="--update-encoding"
        )
    options = FederatedDemoOptions(
        plan=DemoPlan(members_per_store=members),
        rounds=rounds,
        local_epochs=local_epochs,
        strategy=strategy,
        update_encoding=update_encoding,
    )
    root = workdir or Path(tempfile.mkdtemp(prefix="loyalnet-demo-"))
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=False)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    held = False
    try:
        with err.status("starting…", spinner="dots") as status:

            def step(text: str) -> None:
                if not as_json:
                    err.log(text, markup=False, emoji=False)
                    status.update(text)

            def hold(chain: DemoChain, summary: dict[str, object]) -> None:
                nonlocal held
                held = True
                status.stop()
                _report(summary, as_json)
                err.print(
                    "the chain keeps running; open its console in another terminal with:\n"
                    f"  {chain.console_command}\nCtrl-C stops it"
                )
                while True:
                    time.sleep(3600)

            summary = run_federated_demo(
                root,
                options,
                step,
                Settings.from_environment().threads,
                hold=hold if keep else None,
            )
    except KeyboardInterrupt:
        if not held:
            raise
        err.print("the chain stopped")
        return
    finally:
        signal.signal(signal.SIGTERM, previous)
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    _report(summary, as_json)


def _report(summary: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary), flush=True)
    else:
        _show(summary)


def _rate(value: object) -> str:
    return "-" if value is None else f"{float(str(value)):.3f}"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM becomes KeyboardInterrupt so the context managers stop every process we started.
    raise KeyboardInterrupt


def _show(summary: dict[str, object]) -> None:
    stores = summary["stores"]
    assert isinstance(stores, dict)
    table = Table(
        title=f"federated demo: {summary['rounds']} round(s) of {summary['strategy']}, "
        "before -> after"
    )
    for column in ("store", "members", "rank-1", "TAR @ FAR 1e-2", "strangers accepted"):
        table.add_column(column, justify="left" if column == "store" else "right")
    for name, row in stores.items():
        delta = row["rank1_after"] - row["rank1_before"]
        colour = "green" if delta > 0 else "red" if delta < 0 else "white"
        table.add_row(
            name,
            str(row["members"]),
            f"{row['rank1_before']:.3f} -> [{colour}]{row['rank1_after']:.3f}[/]",
            f"{_rate(row['tar_at_far_1e-2_before'])} -> {_rate(row['tar_at_far_1e-2_after'])}",
            f"{row['strangers_accepted_before']} -> {row['strangers_accepted_after']}"
            f" of {row['strangers']}",
        )
    out.print(table)
    targets = sorted({row["target_fpir"] for row in stores.values()})
    out.print(
        f"target FPIR {', '.join(f'{t:g}' for t in targets)} in every store (strangers "
        "accepted / strangers; --json gives "
        "each measured rate its 95% interval and says which sample set each threshold)"
    )
    sent = int(str(summary["bytes_sent_per_store_per_round"]))
    out.print(
        f"each store sent {sent / 1e6:.2f} MB per round (the backbone is "
        f"{int(str(summary['model_bytes'])) / 1e6:.2f} MB of float32); "
        f"{summary['seconds_per_round']} s per round, of which the slowest store trained "
        f"{summary['training_seconds_per_round']} s; epsilon: {summary['epsilon'] or 'no DP'}"
    )
    out.print(
        f"global model: v{summary['model_version']} (training run {summary['run_id']}); "
        "no image, crop or template left a store"
    )
