"""The run config of a federated training run: its keys, defaults and checks.

Flower only lets ``flwr run -c`` override keys that the app's ``[tool.flwr.app.config]``
declares, so :func:`default_run_config` lists every key; ``coordinator.flower_app`` writes
them into the app's pyproject.toml. Keys:

- ``coordinator-dir``: the coordinator's folder; model versions go to ``<it>/models``.
- ``strategy``: ``"fedavg"`` (default) or ``"fedprox"``.
- ``proximal-mu``: FedProx's mu, sent to the stores when the strategy is FedProx.
- ``num-rounds``: rounds in the run.
- ``min-stores``: a round starts only with at least this many stores connected, and all
  connected stores are asked to train.
- ``store-wait-seconds``: how long a round waits for ``min-stores`` stores before the run
  fails (Flower itself would wait forever).
- ``round-timeout-seconds``: how long a round waits for replies; a store that has not
  answered by then is left out of the round. (A store whose SuperNode dies is noticed sooner,
  when it misses its heartbeats: about a minute.)
- ``dp-noise-multiplier``: sigma of the differentially private run (0, the default, is no DP).
  Above 0 every store clips its update and the coordinator adds Gaussian noise of standard
  deviation sigma * ``dp-clipping-norm`` / (stores averaged) to the average; see
  :mod:`coordinator.store_privacy`. Needs ``freeze-batchnorm`` true.
- ``dp-clipping-norm``: C, the L2 norm each store's whole backbone update (trained minus
  received) is clipped to, > 0. The default, 0.05, is about the largest update measured with
  the default training settings: 1e-4 to 0.01 for stores of 6 to 20 LFW members x 3 crops, 0.057
  for 50 members (134 crops, 5 SGD steps); 0.05 for 3 epochs of 20 members, 0.09 at learning
  rate 0.01. Raise it with ``local-epochs`` or ``learning-rate``; the noise grows with it.
- ``dp-delta``: the delta the epsilon of a private run is reported at, in (0, 1); keep it well
  below 1 / (number of stores). Each round's metrics then carry ``epsilon`` and ``dp-delta``
  (:mod:`coordinator.privacy_accountant`).
- the local training settings in :data:`TRAINING_DEFAULTS`, sent to the stores in every
  training message. They mirror ``store_node.training.local.TrainingConfig`` (the coordinator
  imports no face code; a test checks the two agree), and the stores validate them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from coordinator.errors import RunConfigError

ConfigValue = bool | int | float | str
StrategyName = Literal["fedavg", "fedprox"]

TRAINING_DEFAULTS: dict[str, bool | int | float] = {
    "local-epochs": 1,
    "batch-size": 32,
    "learning-rate": 0.001,
    "weight-decay": 5e-4,
    "margin": 0.35,
    "scale": 30.0,
    "min-members": 5,
    "freeze-batchnorm": True,
    "seed": 0,
}
"""Local training settings sent to every store, in kebab case."""

_SERVER_DEFAULTS: dict[str, ConfigValue] = {
    "coordinator-dir": "",
    "strategy": "fedavg",
    "proximal-mu": 0.01,
    "num-rounds": 1,
    "min-stores": 2,
    "store-wait-seconds": 600.0,
    "round-timeout-seconds": 3600.0,
    "dp-noise-multiplier": 0.0,
    "dp-clipping-norm": 0.05,
    "dp-delta": 1e-5,
}


def default_run_config(coordinator_dir: Path) -> dict[str, ConfigValue]:
    """Every run config key with its default, ``coordinator-dir`` set to ``coordinator_dir``."""
    return {
        **_SERVER_DEFAULTS,
        "coordinator-dir": str(coordinator_dir),
        **TRAINING_DEFAULTS,
    }


@dataclass(frozen=True)
class FederationSettings:
    """The coordinator's side of a run config, checked. See the module docstring."""

    coordinator_dir: Path
    strategy: StrategyName
    proximal_mu: float
    num_rounds: int
    min_stores: int
    store_wait_seconds: float
    round_timeout_seconds: float
    training: dict[str, bool | int | float]
    dp_noise_multiplier: float
    dp_clipping_norm: float
    dp_delta: float

    @property
    def private(self) -> bool:
        """Whether the run is differentially private (``dp-noise-multiplier`` > 0)."""
        return self.dp_noise_multiplier > 0

    @property
    def models_dir(self) -> Path:
        """Where the run's model versions are written."""
        return self.coordinator_dir / "models"

    @classmethod
    def from_run_config(cls, values: Mapping[str, object]) -> FederationSettings:
        """Read and check a Flower run config (``context.run_config``).

        Raises:
            RunConfigError: a key is missing, mistyped or out of range.
        """
        folder = _text(values, "coordinator-dir")
        if not folder:
            raise RunConfigError(
                "run config coordinator-dir is empty; set it to the coordinator's folder."
            )
        strategy = _text(values, "strategy")
        if strategy not in ("fedavg", "fedprox"):
            raise RunConfigError(
                f"run config strategy = {strategy!r} is unknown; use 'fedavg' or 'fedprox'."
            )
        training = {key: _like(values, key, default) for key, default in TRAINING_DEFAULTS.items()}
        noise = _number(values, "dp-noise-multiplier", minimum=0.0)
        clipping = _number(values, "dp-clipping-norm", minimum=0.0)
        delta = _number(values, "dp-delta", minimum=0.0)
        if clipping == 0:
            raise RunConfigError("run config dp-clipping-norm = 0 should be a number > 0.")
        if not 0 < delta < 1:
            raise RunConfigError(f"run config dp-delta = {delta} should be between 0 and 1.")
        if noise > 0 and training["freeze-batchnorm"] is not True:
            raise RunConfigError(
                "run config dp-noise-multiplier > 0 needs freeze-batchnorm = true: live "
                "BatchNorm statistics would need noise too, and noise turns the backbone's "
                "near-zero running variances negative."
            )
        return cls(
            coordinator_dir=Path(folder),
            strategy="fedprox" if strategy == "fedprox" else "fedavg",
            proximal_mu=_number(values, "proximal-mu", minimum=0.0),
            num_rounds=_whole(values, "num-rounds", minimum=1),
            min_stores=_whole(values, "min-stores", minimum=1),
            store_wait_seconds=_number(values, "store-wait-seconds", minimum=1.0),
            round_timeout_seconds=_number(values, "round-timeout-seconds", minimum=1.0),
            training=training,
            dp_noise_multiplier=noise,
            dp_clipping_norm=clipping,
            dp_delta=delta,
        )


def _present(values: Mapping[str, object], key: str) -> object:
    if key not in values:
        raise RunConfigError(
            f"run config has no {key}; regenerate the Flower app (coordinator.flower_app)."
        )
    return values[key]


def _text(values: Mapping[str, object], key: str) -> str:
    value = _present(values, key)
    if not isinstance(value, str):
        raise RunConfigError(f"run config {key} = {value!r} should be a string.")
    return value


def _whole(values: Mapping[str, object], key: str, *, minimum: int) -> int:
    value = _present(values, key)
    # bool is an int in Python; a flag is never a count here.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RunConfigError(f"run config {key} = {value!r} should be a whole number >= {minimum}.")
    return value


def _number(values: Mapping[str, object], key: str, *, minimum: float) -> float:
    value = _present(values, key)
    # TOML reads 600 as an int and 600.0 as a float; both mean the same seconds.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RunConfigError(f"run config {key} = {value!r} should be a number.")
    number = float(value)
    if not math.isfinite(number) or number < minimum:
        raise RunConfigError(f"run config {key} = {number} should be a number >= {minimum}.")
    return number


def _like(
    values: Mapping[str, object], key: str, default: bool | int | float
) -> bool | int | float:
    """``values[key]`` (the default when absent) if it has the default's type."""
    value = values.get(key, default)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise RunConfigError(
        f"run config {key} = {value!r} should be a {type(default).__name__}, "
        f"like its default {default!r}."
    )
