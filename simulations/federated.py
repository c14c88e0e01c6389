"""The federated strategies, run on Flower's simulation engine with the real store and server code.

One call of Flower's simulation engine (Ray) runs every federated strategy of the experiment,
one after the other, over the same simulated stores:

- each simulated store is a Ray-hosted SuperNode whose ClientApp is the store's own
  (``store_node.client_app.app``: the same local training, the same clipping mod). The thin
  :func:`simulated_stores` app in front of it only tells it which store folder it is, from the
  engine's ``partition-id``, as ``flower-supernode --node-config store-dir=...`` does in a
  deployment;
- the server side is the coordinator's strategy (``coordinator.strategy.build_strategy``:
  FedAvg or FedProx in ``StoreRounds``, in ``StorePrivacy`` for the DP run), started by a
  simulation-only ServerApp that, after every round, hands the global model to the
  simulation's evaluation (``evaluate_fn``), which runs in this process between rounds.
  The last round is scored on the model the coordinator would release
  (``coordinator.release_mix``, the experiment's ``release_mix``).

The strategies:

- ``fedavg``: McMahan et al., "Communication-Efficient Learning of Deep Networks from
  Decentralized Data", AISTATS 2017: w_{t+1} = sum_k (n_k / n) w_k, n_k the store's crops;
- ``fedprox``: Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020: the
  same average of local models trained with (mu / 2) ||w - w_t||^2 added to their loss;
- ``fedavg-dp``: FedAvg with store-side clipping to C and Gaussian noise sigma C / m on the
  average (McMahan et al., ICLR 2018), see ``coordinator.store_privacy``.

Why the engine's Python entry point (``flwr.simulation.run_simulation``, deprecated in Flower
1.42 in favour of ``flwr run``) and not ``flwr run``: ``flwr run`` starts a detached local
SuperLink that outlives the run and runs the ServerApp in another process, so the per-round
evaluation would have to go through files and the progress display through logs. Here the
evaluation is a plain callback and nothing is left running when the call returns. To run on
a Ray cluster, pass its address (``init_args``); see the README.

Flower draws the DP noise from NumPy's global generator; a simulated DP run seeds it with the
experiment's seed (only here: a coordinator's real noise must never be predictable).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, ConfigRecordValues, Context, Message, MetricRecord
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from coordinator.release_mix import released_model
from coordinator.run_config import FederationSettings
from coordinator.strategy import build_strategy
from loyalnet.packed_backbone import BackboneLayout
from loyalnet.update_encoding import encoding_named
from simulations.experiment import Experiment
from simulations.stores import fresh_copies
from store_node.client_app import STORE_DIR_KEY, THREADS_KEY
from store_node.client_app import app as store_client_app

FEDERATED_STRATEGIES = ("fedavg", "fedprox", "fedavg-dp")
"""The strategies that run on the simulation engine (the others need no coordinator)."""

STORE_WAIT_SECONDS = 300.0
"""How long a round waits for the simulated stores to be up (Ray starts them lazily)."""

RoundHook = Callable[[str, int, dict[str, torch.Tensor]], None]
"""Called with (strategy, round, global backbone) for round 0 and after every round."""


@dataclass(frozen=True)
class RoundCosts:
    """What one federated round cost: bytes moved both ways, seconds, epsilon (DP only)."""

    bytes: int
    seconds: float
    epsilon: float | None


def settings_for(
    experiment: Experiment, strategy: str, stores: int, workdir: Path
) -> FederationSettings:
    """The coordinator's run settings for one federated strategy of ``experiment``."""
    private = strategy == "fedavg-dp"
    return FederationSettings(
        coordinator_dir=workdir / "coordinator",
        strategy="fedprox" if strategy == "fedprox" else "fedavg",
        proximal_mu=experiment.proximal_mu,
        num_rounds=experiment.rounds,
        # Flower samples max(fraction x stores, min-stores): the minimum is the sample itself.
        min_stores=max(1, round(stores * experiment.fraction_train)),
        store_wait_seconds=STORE_WAIT_SECONDS,
        round_timeout_seconds=3600.0,
        training=experiment.store_training(),
        dp_noise_multiplier=experiment.privacy.noise_multiplier if private else 0.0,
        dp_clipping_norm=experiment.privacy.clipping_norm,
        dp_delta=experiment.privacy.delta,
        update_encoding=encoding_named(experiment.update_encoding),
        fraction_train=experiment.fraction_train,
        release_mix=experiment.release_mix,
    )


def simulated_stores(store_dirs: Sequence[Path], threads: int = 1) -> ClientApp:
    """A ClientApp that runs the store's own ClientApp on store ``partition-id``'s folder.

    Args:
        store_dirs: the store folders, indexed by the engine's ``partition-id``.
        threads: torch CPU threads each simulated store trains with.
    """
    folders = [str(path) for path in store_dirs]
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        partition = context.node_config["partition-id"]
        if not isinstance(partition, int) or not 0 <= partition < len(folders):
            raise ValueError(f"partition-id {partition!r} names no simulated store")
        context.node_config[STORE_DIR_KEY] = folders[partition]
        context.node_config[THREADS_KEY] = threads
        return store_client_app(msg, context)

    return app


def run_federated(
    experiment: Experiment,
    strategies: Sequence[str],
    originals: Sequence[Path],
    workdir: Path,
    initial: Mapping[str, torch.Tensor],
    on_round: RoundHook,
    backend_config: dict[str, Any] | None = None,
) -> dict[str, list[RoundCosts]]:
    """Run ``strategies`` (from :data:`FEDERATED_STRATEGIES`) on the simulation engine.

    Args:
        originals: the enrolled store folders; each strategy trains on fresh copies of them.
        workdir: scratch space (the live copies of the store folders).
        initial: the backbone every strategy starts from.
        on_round: the evaluation, called in this process between rounds.
        backend_config: Flower's simulation backend settings; the default runs one store
            per CPU core on a local Ray instance.

    Returns:
        Per strategy, the costs of rounds 1..rounds.

    Raises:
        Whatever a strategy raised (e.g. ``TooFewStoresError``), after the engine stopped.
    """
    live = workdir / "live-stores"
    costs: dict[str, list[RoundCosts]] = {}
    failures: list[BaseException] = []
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            for strategy in strategies:
                fresh_copies(originals, live)
                costs[strategy] = _run_strategy(
                    experiment, strategy, len(originals), workdir, grid, initial, on_round
                )
        except BaseException as err:  # re-raised in the caller's thread, after Ray stops
            failures.append(err)

    run_simulation(
        server_app=server,
        client_app=simulated_stores([live / path.name for path in originals]),
        num_supernodes=len(originals),
        backend_config=backend_config or {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    if failures:
        raise failures[0]
    missing = [strategy for strategy in strategies if strategy not in costs]
    if missing:
        raise RuntimeError(
            f"the simulation engine stopped before {', '.join(missing)} ran; see "
            "simulation.log in the output folder."
        )
    return costs


def _run_strategy(
    experiment: Experiment,
    strategy: str,
    stores: int,
    workdir: Path,
    grid: Grid,
    initial: Mapping[str, torch.Tensor],
    on_round: RoundHook,
) -> list[RoundCosts]:
    settings = settings_for(experiment, strategy, stores, workdir)
    if settings.private:
        np.random.seed(experiment.seed)  # see the module docstring
    round_config: dict[str, ConfigRecordValues] = dict(settings.round_config())

    layout = BackboneLayout.of(initial)
    start = ArrayRecord(layout.pack(initial))

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == settings.num_rounds:  # what the coordinator would release
            arrays = released_model(start, arrays, settings.release_mix)
        on_round(strategy, server_round, layout.unpack(arrays.to_torch_state_dict()))
        return None

    result = build_strategy(settings).start(
        grid=grid,
        initial_arrays=start,
        num_rounds=settings.num_rounds,
        timeout=settings.round_timeout_seconds,
        train_config=ConfigRecord(round_config),
        evaluate_fn=evaluate,
    )
    model_bytes = ArrayRecord(layout.pack(initial)).count_bytes()  # as it travels
    rounds = []
    for server_round in range(1, settings.num_rounds + 1):
        metrics = dict(result.train_metrics_clientapp.get(server_round, MetricRecord()))
        asked = int(_number(metrics.get("stores-asked", 0)))
        sent = int(_number(metrics.get("arrays-bytes", 0)))
        epsilon = metrics.get("epsilon")
        rounds.append(
            RoundCosts(
                bytes=asked * model_bytes + sent,
                seconds=_number(metrics.get("round-seconds", 0.0)),
                epsilon=_number(epsilon) if epsilon is not None else None,
            )
        )
    return rounds


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0
