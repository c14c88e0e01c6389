"""The run config of a federated training run: its keys, defaults and checks.

Flower only lets ``flwr run -c`` override keys that the app's ``[tool.flwr.app.config]``
declares, so :func:`default_run_config` lists every key; ``coordinator.flower_app`` writes
them into the app's pyproject.toml. Keys:

- ``coordinator-dir``: the coordinator's folder; model versions go to ``<it>/models``.
- ``registry-run-id``: the run's id in the coordinator's registry when the control plane
  started it (``loyalnet admin train``): each round's aggregate metrics are written there as
  the round ends, for the console. 0 (default): not reported.
- ``strategy``: how the stores' updates are combined. ``"fedavg"`` (default) or
  ``"fedprox"``: the mean weighted by crops; ``"trimmed-mean"``: per number, the mean of the
  stores' values after cutting ``trim-fraction`` of them off each end (Flower's
  FedTrimmedAvg, Yin et al. 2018); ``"median"``: per number, the median of the stores' values
  (Flower's FedMedian). The last two weigh every store the same, ignoring store sizes, and
  per number no value from up to floor(beta * stores) stores at either end (trimmed mean) or
  from fewer than half of the stores (median) can pull the result outside the others' values
  (:mod:`coordinator.strategy`).
- ``trim-fraction``: beta of ``"trimmed-mean"``, in [0, 0.5): floor(beta * stores) values
  are cut off each end of every number, so it cuts nothing below 1 / beta stores (5 at the
  default 0.2).
- ``proximal-mu``: FedProx's mu, sent to the stores when the strategy is FedProx.
- ``num-rounds``: rounds in the run.
- ``min-stores``: a round starts only with at least this many stores connected.
- ``fraction-train``: the share of connected stores asked to train each round, in (0, 1]
  (default 1: all of them). Flower's FedAvg samples them at random, at least ``min-stores``;
  a chain of thousands of stores asks a few hundred a round.
- ``store-wait-seconds``: how long a round waits for ``min-stores`` stores before the run
  fails (Flower itself would wait forever).
- ``round-timeout-seconds``: how long a round waits for replies; a store that has not
  answered by then is left out of the round. (A store whose SuperNode dies is noticed sooner,
  when it misses its heartbeats: about a minute.)
- ``max-update-norm``: B, > 0: every store's update (trained minus received, L2 over the
  whole backbone's parameters) longer than B is shortened to B before averaging. The
  default, 0.5, is about 5 times the largest update measured (see ``dp-clipping-norm``);
  raise it with ``local-epochs`` or ``learning-rate``. A private run clips at
  ``dp-clipping-norm`` instead.
- ``max-weight-multiple``: K, >= 1: a store weighs at most K times the median store's
  ``num-examples`` of the round (default 5), so one store claiming 1e12 crops cannot
  replace the global model. Both bounds, and the screening of replies that are no update of
  the global model (NaN, other shapes, a count that is no count), are in
  :mod:`coordinator.store_influence` and :mod:`coordinator.update_screening`; rejected stores
  are counted in the round's ``stores-rejected`` metric.
- ``dp-noise-multiplier``: sigma of the differentially private run (0, the default, is no DP).
  Above 0 every store clips its update and the coordinator adds Gaussian noise of standard
  deviation sigma * ``dp-clipping-norm`` / (stores averaged) to the average; see
  :mod:`coordinator.store_privacy`. Needs ``freeze-batchnorm`` true and ``strategy``
  ``"fedavg"`` or ``"fedprox"`` (the noise is sized for a mean).
- ``dp-clipping-norm``: C, the L2 norm each store's whole backbone update (trained minus
  received) is clipped to, > 0. The default, 0.05, is about the largest update measured with
  the default training settings: 1e-4 to 0.01 for stores of 6 to 20 LFW members x 3 crops, 0.057
  for 50 members (134 crops, 5 SGD steps); 0.05 for 3 epochs of 20 members, 0.09 at learning
  rate 0.01. Raise it with ``local-epochs`` or ``learning-rate``; the noise grows with it.
- ``dp-delta``: the delta the epsilon of a private run is reported at, in (0, 1); keep it well
  below 1 / (number of stores). Each round's metrics then carry ``epsilon`` and ``dp-delta``
  (:mod:`coordinator.privacy_accountant`).
- ``update-encoding``: how stores send their trained backbone: ``"float32"`` (default) or
  ``"float16-delta"``, its change from the global model in float16, half the bytes
  (:mod:`loyalnet.update_encoding`; the coordinator restores float32 weights before anything
  else sees them). Asked of the stores in the round config; a store too old to know the key
  declines the round.
- ``release-mix``: alpha in (0, 1], how far the released model version moves from the run's
  starting model towards the last round's: ``w_0 + alpha (w_T - w_0)`` (WiSE-FT,
  :mod:`coordinator.release_mix`). 1 (default) releases the last round's model. In the
  simulations 0.7 kept 90% of the centralized gain and gave back most of what fine-tuning
  cost on cameras no store had.
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
from loyalnet.update_encoding import (
    FLOAT32,
    UPDATE_ENCODING_KEY,
    UpdateEncoding,
    UpdateEncodingError,
    encoding_named,
)

ConfigValue = bool | int | float | str
StrategyName = Literal["fedavg", "fedprox", "trimmed-mean", "median"]
STRATEGIES: tuple[StrategyName, ...] = ("fedavg", "fedprox", "trimmed-mean", "median")
MEAN_STRATEGIES: tuple[StrategyName, ...] = ("fedavg", "fedprox")
"""The strategies that average (a private run's noise is sized for a mean)."""
DEFAULT_TRIM_FRACTION = 0.2
DEFAULT_MAX_UPDATE_NORM = 0.5
DEFAULT_MAX_WEIGHT_MULTIPLE = 5.0

TRAINING_DEFAULTS: dict[str, bool | int | float] = {
    "local-epochs": 1,
    "batch-size": 32,
    "learning-rate": 0.001,
    "weight-decay": 5e-4,
    "margin": 0.35,
    "scale": 30.0,
    "min-members": 5,
    "freeze-batchnorm": True,
    "frozen-layers": 0,
    "seed": 0,
}
"""Local training settings sent to every store, in kebab case."""

_SERVER_DEFAULTS: dict[str, ConfigValue] = {
    "coordinator-dir": "",
    "strategy": "fedavg",
    "proximal-mu": 0.01,
    "num-rounds": 1,
    "min-stores": 2,
    "fraction-train": 1.0,
    "store-wait-seconds": 600.0,
    "round-timeout-seconds": 3600.0,
    "trim-fraction": DEFAULT_TRIM_FRACTION,
    "max-update-norm": DEFAULT_MAX_UPDATE_NORM,
    "max-weight-multiple": DEFAULT_MAX_WEIGHT_MULTIPLE,
    "dp-noise-multiplier": 0.0,
    "dp-clipping-norm": 0.05,
    "dp-delta": 1e-5,
    "registry-run-id": 0,
    UPDATE_ENCODING_KEY: FLOAT32,
    "release-mix": 1.0,
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
    trim_fraction: float = DEFAULT_TRIM_FRACTION
    max_update_norm: float = DEFAULT_MAX_UPDATE_NORM
    max_weight_multiple: float = DEFAULT_MAX_WEIGHT_MULTIPLE
    registry_run_id: int = 0
    update_encoding: UpdateEncoding = FLOAT32
    fraction_train: float = 1.0
    release_mix: float = 1.0

    def round_config(self) -> dict[str, bool | int | float | str]:
        """What every store is sent with the global model: the training settings, and the
        update encoding unless it is plain float32 (so stores of any version can train)."""
        config: dict[str, bool | int | float | str] = dict(self.training)
        if self.update_encoding != FLOAT32:
            config[UPDATE_ENCODING_KEY] = self.update_encoding
        return config

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
        name = _text(values, "strategy")
        strategy = next((known for known in STRATEGIES if known == name), None)
        if strategy is None:
            raise RunConfigError(
                f"run config strategy = {name!r} is unknown; use one of "
                + ", ".join(repr(known) for known in STRATEGIES)
                + "."
            )
        training = {key: _like(values, key, default) for key, default in TRAINING_DEFAULTS.items()}
        noise = _number(values, "dp-noise-multiplier", minimum=0.0)
        clipping = _number(values, "dp-clipping-norm", minimum=0.0)
        delta = _number(values, "dp-delta", minimum=0.0)
        if clipping == 0:
            raise RunConfigError("run config dp-clipping-norm = 0 should be a number > 0.")
        if not 0 < delta < 1:
            raise RunConfigError(f"run config dp-delta = {delta} should be between 0 and 1.")
        if noise > 0 and strategy not in MEAN_STRATEGIES:
            raise RunConfigError(
                f"run config dp-noise-multiplier > 0 needs strategy 'fedavg' or 'fedprox', not "
                f"{strategy!r}: the noise is sized for a mean of clipped updates, and a "
                "trimmed mean or median moves further when one store changes."
            )
        trim = _number(values, "trim-fraction", minimum=0.0)
        if trim >= 0.5:
            raise RunConfigError(
                f"run config trim-fraction = {trim} should be below 0.5 (it is cut off each end)."
            )
        bound = _number(values, "max-update-norm", minimum=0.0)
        if bound == 0:
            raise RunConfigError("run config max-update-norm = 0 should be a number > 0.")
        if noise > 0 and training["freeze-batchnorm"] is not True:
            raise RunConfigError(
                "run config dp-noise-multiplier > 0 needs freeze-batchnorm = true: live "
                "BatchNorm statistics would need noise too, and noise turns the backbone's "
                "near-zero running variances negative."
            )
        return cls(
            coordinator_dir=Path(folder),
            strategy=strategy,
            proximal_mu=_number(values, "proximal-mu", minimum=0.0),
            num_rounds=_whole(values, "num-rounds", minimum=1),
            min_stores=_whole(values, "min-stores", minimum=1),
            store_wait_seconds=_number(values, "store-wait-seconds", minimum=1.0),
            round_timeout_seconds=_number(values, "round-timeout-seconds", minimum=1.0),
            training=training,
            dp_noise_multiplier=noise,
            dp_clipping_norm=clipping,
            dp_delta=delta,
            trim_fraction=trim,
            max_update_norm=bound,
            max_weight_multiple=_number(values, "max-weight-multiple", minimum=1.0),
            # Absent from apps written before runs were reported: then nothing is reported.
            registry_run_id=_whole({"registry-run-id": 0, **values}, "registry-run-id", minimum=0),
            update_encoding=_encoding({UPDATE_ENCODING_KEY: FLOAT32, **values}),
            fraction_train=_share({"fraction-train": 1.0, **values}, "fraction-train"),
            release_mix=_share(
                {"release-mix": 1.0, **values},
                "release-mix",
                ": the share of the run's change the released model keeps (1: the last round's "
                "model as it is)",
            ),
        )


def _share(values: Mapping[str, object], key: str, meaning: str = "") -> float:
    """``values[key]`` as a share in (0, 1]; ``meaning`` (": ...") explains it in the error."""
    value = _number(values, key, minimum=0.0)
    if not 0 < value <= 1:
        raise RunConfigError(f"run config {key} = {value} should be in (0, 1]{meaning}.")
    return value


def _encoding(values: Mapping[str, object]) -> UpdateEncoding:
    try:
        return encoding_named(values[UPDATE_ENCODING_KEY])
    except UpdateEncodingError as err:
        raise RunConfigError(f"run config {err}") from None


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
