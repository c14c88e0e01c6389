"""The released model of a run: WiSE-FT's weight-space mix of the start and the last round."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from coordinator.errors import RunConfigError
from coordinator.release_mix import released_model
from coordinator.run_config import FederationSettings, default_run_config
from simulations.experiment import ExperimentError, experiment_from_dict

START = {"backbone.parameters": np.array([1.0, -2.0, 0.5], dtype=np.float32)}
FINAL = {"backbone.parameters": np.array([3.0, -2.0, -0.5], dtype=np.float32)}


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({name: Array(value) for name, value in arrays.items()})


def test_the_mix_moves_each_number_part_of_the_way() -> None:
    released = released_model(_record(START), _record(FINAL), 0.25)
    mixed = released["backbone.parameters"].numpy()
    assert mixed.dtype == np.float32
    np.testing.assert_allclose(mixed, [1.5, -2.0, 0.25], rtol=0, atol=1e-7)


def test_alpha_one_releases_the_last_round_as_it_is() -> None:
    final = _record(FINAL)
    assert released_model(_record(START), final, 1.0) is final


@pytest.mark.parametrize("alpha", [0.0, -0.5, 1.01, float("nan")])
def test_an_alpha_outside_zero_to_one_is_refused(alpha: float) -> None:
    with pytest.raises(RunConfigError, match="release-mix"):
        released_model(_record(START), _record(FINAL), alpha)


def test_models_of_other_arrays_are_refused() -> None:
    other = {"backbone.parameters": np.zeros(4, dtype=np.float32)}
    with pytest.raises(RunConfigError, match="is \\(3,\\) in the starting model"):
        released_model(_record(START), _record(other), 0.5)
    renamed = {"backbone.weights": FINAL["backbone.parameters"]}
    with pytest.raises(RunConfigError, match="different arrays"):
        released_model(_record(START), _record(renamed), 0.5)


def test_the_run_config_reads_release_mix() -> None:
    values = default_run_config(Path("unused"))
    assert FederationSettings.from_run_config(values).release_mix == 1.0
    mixed = FederationSettings.from_run_config({**values, "release-mix": 0.7})
    assert mixed.release_mix == 0.7
    older = {key: value for key, value in values.items() if key != "release-mix"}
    assert FederationSettings.from_run_config(older).release_mix == 1.0  # an older app
    for bad in (0, 1.5, "0.7", True):
        with pytest.raises(RunConfigError, match="release-mix"):
            FederationSettings.from_run_config({**values, "release-mix": bad})


def test_an_experiment_reads_release_mix() -> None:
    base = {
        "name": "mix",
        "seed": 1,
        "rounds": 2,
        "strategies": ["none", "fedprox"],
        "stores": [{"condition": "clean", "count": 2}],
    }
    assert experiment_from_dict(base).release_mix == 1.0
    mixed = experiment_from_dict({**base, "release_mix": 0.7})
    assert mixed.release_mix == 0.7
    record = mixed.as_dict()
    del record["source"]
    assert experiment_from_dict(record) == mixed
    with pytest.raises(ExperimentError, match="release_mix"):
        experiment_from_dict({**base, "release_mix": 0})
