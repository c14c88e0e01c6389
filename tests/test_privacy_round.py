"""A differentially private run with real Flower processes: clipped on the wire, noised
global model, epsilon per round in the manifest.

The stores, the SuperLink and the recording proxies are those of ``test_federated_round``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import numpy as np
import pytest
from fleet_recorder import received_messages, sent_messages
from flwr.app import ArrayRecord
from numpy.typing import NDArray
from test_federated_round import (  # noqa: F401 (fixtures, used by name)
    Federation,
    Store,
    _only_version,
    federation,
    people,
    pipeline,
    store_a,
    store_b,
    stores_root,
)

from coordinator.model_versions import load_model_version
from coordinator.privacy_accountant import privacy_spent
from coordinator.store_influence import STATISTICS_SUFFIXES
from loyalnet.packed_backbone import BackboneLayout
from store_node.config import StorePaths, read_config, write_config
from store_node.face.mobilefacenet import MobileFaceNet
from store_node.training.backbone import backbone_state

Arrays = dict[str, NDArray[np.float64]]


@pytest.mark.slow
def test_private_rounds_clip_add_noise_and_report_epsilon(
    federation: Federation,  # noqa: F811
    store_a: Store,  # noqa: F811
    store_b: Store,  # noqa: F811
) -> None:
    sigma, clipping = 1.0, 0.002
    for store in (store_a, store_b):  # allow the round's large steps; insist on clipping
        paths = StorePaths(store.folder)
        config = read_config(paths)
        limits = replace(
            config.training, max_learning_rate=0.05, require_clipping=True, max_clipping_norm=0.01
        )
        write_config(paths, replace(config, training=limits))
    recorders = {
        "a": federation.add_store("store-a", store_a),
        "b": federation.add_store("store-b", store_b),
    }
    federation.flower.wait_for_supernodes(2)
    started = time.perf_counter()
    status = federation.run(
        **{
            "min-stores": 2,
            "num-rounds": 2,
            "dp-noise-multiplier": sigma,
            "dp-clipping-norm": clipping,
            # Steps big enough that the updates are clipped, and well above float32 rounding
            # (above the stores' default limit of 0.01, so raised above).
            "learning-rate": 0.05,
        }
    )
    assert status.completed, federation.flower.run_log(status.run_id)
    federation.flower.stop()
    print(f"2 private rounds with 2 stores: {time.perf_counter() - started:.1f} s")

    saved = _only_version(federation.coordinator)
    manifest = json.loads(saved.manifest_path.read_text())
    assert manifest["run_config"]["dp-noise-multiplier"] == sigma
    for round_ in (1, 2):
        metrics = manifest["rounds"][str(round_)]
        assert metrics["stores-trained"] == 2
        assert metrics["epsilon"] == privacy_spent(round_, sigma, 1e-5).epsilon
        assert metrics["dp-delta"] == 1e-5
        assert metrics["dp-noise-stddev"] == pytest.approx(sigma * clipping / 2)
        assert metrics["dp-clipped-here"] == 0  # the stores clipped their own
        print(f"round {round_}: epsilon {metrics['epsilon']:.3f} at delta 1e-5")
    assert manifest["rounds"]["2"]["epsilon"] == pytest.approx(7.08, abs=0.01)

    # What each store received and sent in round 2, as it went over the wire.
    received: dict[str, Arrays] = {}
    sent: dict[str, Arrays] = {}
    for name, recorder in recorders.items():
        exchanges = recorder.recorded()
        asked = received_messages(exchanges)[-1]
        assert asked.content.config_records["config"]["clipping_norm"] == clipping
        received[name] = _float64(asked.content.array_records["arrays"])
        sent[name] = _float64(sent_messages(exchanges)[-1].content.array_records["arrays"])
        update = _norm({key: sent[name][key] - received[name][key] for key in received[name]})
        print(f"store {name}: update L2 norm {update:.6f} on the wire")
        assert update == pytest.approx(clipping, rel=0.01)  # clipped, not just small
    assert received["a"].keys() == received["b"].keys()

    model = {
        key: value.numpy().astype(np.float64) for key, value in load_model_version(saved).items()
    }
    assert all(np.isfinite(value).all() for value in model.values())
    average = {key: (sent["a"][key] + sent["b"][key]) / 2 for key in model}
    trainable = [key for key in model if not key.endswith(STATISTICS_SUFFIXES)]
    noise = np.concatenate([(model[key] - average[key]).ravel() for key in trainable])
    print(f"noise on {noise.size} numbers: std {noise.std():.3g}, expected {sigma * clipping / 2}")
    assert noise.std() == pytest.approx(sigma * clipping / 2, rel=0.02)
    for key in set(model) - set(trainable):
        assert np.array_equal(model[key], received["a"][key]), key  # frozen, no noise


def _float64(record: ArrayRecord) -> Arrays:
    """The backbone a packed record holds, by tensor name, in float64."""
    state = BackboneLayout.of(backbone_state(MobileFaceNet())).unpack(record.to_torch_state_dict())
    return {key: value.numpy().astype(np.float64) for key, value in state.items()}


def _norm(arrays: Arrays) -> float:
    return math.sqrt(sum(float(np.sum(value**2)) for value in arrays.values()))
