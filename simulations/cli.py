"""``loyalnet sim``: federated simulations for researchers, from an experiment file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

sim_app = typer.Typer(
    help=(
        "Simulate many stores fine-tuning the face model together, on real faces, and compare "
        "strategies (none, local-only, fedavg, fedprox, fedavg-dp, centralized). Experiments "
        "are TOML files; see simulations/experiments/ for two to start from."
    ),
    no_args_is_help=True,
)


@sim_app.command("run")
def run(
    experiment_file: Annotated[
        Path,
        typer.Argument(
            metavar="EXPERIMENT.toml",
            help="The experiment: stores, members, conditions, rounds, strategies "
            "(e.g. simulations/experiments/quick.toml).",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Folder for results.json, report.md, the plots and the simulated stores; "
            "must not hold an earlier run.",
        ),
    ],
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Run the simulated stores on this Ray cluster (e.g. 'auto' on a node of it) "
            "instead of a local Ray instance; --out must then be on a file system every node "
            "mounts at the same path.",
        ),
    ] = None,
    cpus_per_store: Annotated[
        float, typer.Option(min=0.1, help="CPU cores Ray reserves for each simulated store.")
    ] = 1.0,
) -> None:
    """Run every strategy of the experiment; write results.json, report.md and PNG plots.

    Same experiment file, same numbers. On two cores quick.toml takes about 2 minutes,
    store_conditions.toml about 25; simulation.log in --out shows every round as it comes.
    """
    # Imported here so that `loyalnet --help` does not pay for torch and Ray.
    from simulations.experiment import load_experiment
    from simulations.report import REPORT_FILE
    from simulations.runner import run_experiment

    experiment = load_experiment(experiment_file)
    backend: dict[str, object] = {"client_resources": {"num_cpus": cpus_per_store, "num_gpus": 0.0}}
    if ray_address:
        backend["init_args"] = {"address": ray_address}
    console = Console(stderr=True, emoji=False)
    columns = (
        # Store and strategy names come from the experiment file: shown as written, not markup.
        TextColumn("{task.description}", style="progress.description", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        results = run_experiment(experiment, out, progress=progress, backend_config=backend)
    console.print(
        f"{escape(experiment.name)}: {len(results.strategies)} strategies in "
        f"{results.seconds:.0f} s"
    )
    Console().print((out / REPORT_FILE).read_text(encoding="utf-8"), markup=False, highlight=False)
    console.print(
        f"results: {out / 'results.json'}; report and plots: {out}", markup=False, emoji=False
    )


@sim_app.command("report")
def report(
    folder: Annotated[
        Path, typer.Argument(metavar="DIR", help="The --out folder of a `loyalnet sim run`.")
    ],
) -> None:
    """Write report.md and the PNG plots again from DIR/results.json, and show the table."""
    from simulations.report import write_report

    written = write_report(folder)
    Console().print(written[0].read_text(encoding="utf-8"), markup=False, highlight=False)
    Console(stderr=True).print(
        "wrote " + ", ".join(str(path) for path in written), markup=False, emoji=False
    )
