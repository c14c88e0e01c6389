"""A store's update in float16: half the bytes, its change exact to float16's precision, and a
coordinator that restores float32 weights before screening and averaging them."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from synthetic import FakeGrid

from coordinator.errors import RunConfigError
from coordinator.run_config import FederationSettings, default_run_config
from coordinator.strategy import WEIGHT_KEY, build_strategy
from loyalnet.update_encoding import (
    DELTA_SUFFIX,
    UPDATE_ENCODING_KEY,
    UpdateEncodingError,
    decode_float16_delta,
    encode_float16_delta,
    is_float16_delta,
)
from store_node.config import TrainingLimits
from store_node.training.floor import round_refusal


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({name: Array(value) for name, value in arrays.items()})


@pytest.fixture
def received() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {
        "backbone.parameters": rng.normal(0, 0.1, 50_000).astype(np.float32),
        "backbone.running_mean": rng.normal(0, 1, 300).astype(np.float32),
        "backbone.running_var": rng.uniform(0.5, 30, 300).astype(np.float32),
    }


def _trained(received: dict[str, np.ndarray], step: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(12)
    return {
        name: (value + rng.normal(0, step, value.shape)).astype(np.float32)
        for name, value in received.items()
    }


def test_the_change_travels_in_half_the_bytes_and_comes_back_to_float16_precision(
    received: dict[str, np.ndarray],
) -> None:
    trained = _trained(received, 1e-3)  # a round's change at the default learning rate
    encoded = encode_float16_delta(_record(trained), _record(received))
    assert is_float16_delta(encoded) and not is_float16_delta(_record(trained))
    assert list(encoded.keys()) == [name + DELTA_SUFFIX for name in received]
    assert encoded.count_bytes() < 0.51 * _record(trained).count_bytes()

    restored = decode_float16_delta(encoded, _record(received))
    assert list(restored.keys()) == list(received)
    for name, value in trained.items():
        change = value - received[name]
        error = np.abs(restored[name].numpy() - value)
        assert restored[name].numpy().dtype == np.float32
        # float16 keeps 11 significant bits of the change (plus float32 rounding of the sum).
        assert np.all(error <= np.abs(change) * 2**-11 + 4e-6), name
        # Rounding the weights themselves would have cost ~10x more on the parameters.
    weights16 = trained["backbone.parameters"].astype(np.float16).astype(np.float32)
    as_weights = np.abs(weights16 - trained["backbone.parameters"]).mean()
    as_change = np.abs(restored["backbone.parameters"].numpy() - trained["backbone.parameters"])
    assert as_change.mean() * 10 < as_weights


def test_a_change_beyond_float16_is_infinite_and_refused_later(
    received: dict[str, np.ndarray],
) -> None:
    trained = dict(received)
    trained["backbone.running_var"] = received["backbone.running_var"] + np.float32(1e6)
    encoded = encode_float16_delta(_record(trained), _record(received))
    restored = decode_float16_delta(encoded, _record(received))
    assert np.isinf(restored["backbone.running_var"].numpy()).all()


def test_an_encoded_reply_that_does_not_fit_the_global_model_is_refused(
    received: dict[str, np.ndarray],
) -> None:
    encoded = encode_float16_delta(_record(received), _record(received))
    smaller = dict(received)
    smaller["backbone.running_mean"] = received["backbone.running_mean"][:10]
    with pytest.raises(UpdateEncodingError, match="shape"):
        decode_float16_delta(encoded, _record(smaller))
    with pytest.raises(UpdateEncodingError, match="arrays"):
        decode_float16_delta(
            _record(
                {
                    n + DELTA_SUFFIX: v.astype(np.float16)
                    for n, v in received.items()
                    if "var" not in n
                }
            ),
            _record(received),
        )
    # A store's word against its bytes: one number declared as the whole array must not
    # broadcast over it, and bytes that are no array must not escape as a crash.
    one = Array(np.full(1, 3.0, np.float16))
    for data, reason in ((one.data, "it declares"), (b"not numpy", "cannot be read")):
        lying = _record({n + DELTA_SUFFIX: v.astype(np.float16) for n, v in received.items()})
        honest = lying["backbone.running_mean" + DELTA_SUFFIX]
        lying["backbone.running_mean" + DELTA_SUFFIX] = Array(
            honest.dtype, honest.shape, honest.stype, data
        )
        with pytest.raises(UpdateEncodingError, match=reason):
            decode_float16_delta(lying, _record(received))
    float32_change = _record({n + DELTA_SUFFIX: v for n, v in received.items()})
    with pytest.raises(UpdateEncodingError, match="not float16"):
        decode_float16_delta(float32_change, _record(received))
    with pytest.raises(UpdateEncodingError, match="arrays"):
        encode_float16_delta(
            _record(smaller | {"extra": np.zeros(1, np.float32)}), _record(received)
        )


def _settings(**overrides: object) -> FederationSettings:
    values = {**default_run_config(Path("unused")), "min-stores": 1, "store-wait-seconds": 5}
    return FederationSettings.from_run_config({**values, **overrides})


@pytest.mark.usefixtures("task_identity")
def test_a_round_averages_float16_changes_as_it_would_the_float32_weights(
    received: dict[str, np.ndarray],
) -> None:
    settings = _settings(**{"update-encoding": "float16-delta", "freeze-batchnorm": False})
    assert settings.round_config()[UPDATE_ENCODING_KEY] == "float16-delta"
    assert UPDATE_ENCODING_KEY not in _settings().round_config()  # float32: nothing asked
    start = _record(received)
    trained = [_trained(received, step) for step in (1e-3, 3e-3)]
    metrics = {WEIGHT_KEY: 10, "members": 5, "declined": 0}
    results = {}
    for encoded in (False, True):
        strategy = build_strategy(settings)
        grid = cast(Grid, FakeGrid([11, 12, 13]))
        asked = list(strategy.configure_train(1, start, ConfigRecord(), grid))
        replies = []
        for message, arrays in zip(asked, trained, strict=False):
            record = _record(arrays)
            if encoded:
                record = encode_float16_delta(record, start)
            content = RecordDict({"arrays": record, "metrics": MetricRecord(metrics)})
            replies.append(Message(content, reply_to=message))
        # A third store sends a change of another model: refused, not averaged.
        wrong = encode_float16_delta(_record(received), start)
        wrong_content = dict(received)
        wrong_content["backbone.parameters"] = received["backbone.parameters"][:5]
        bad = RecordDict(
            {
                "arrays": _record(
                    {n + DELTA_SUFFIX: v.astype(np.float16) for n, v in wrong_content.items()}
                ),
                "metrics": MetricRecord(metrics),
            }
        )
        assert is_float16_delta(wrong)
        replies.append(Message(bad, reply_to=asked[2]))
        arrays, round_metrics = strategy.aggregate_train(1, replies)
        assert arrays is not None and round_metrics is not None
        assert round_metrics["stores-trained"] == 2 and round_metrics["stores-rejected"] == 1
        results[encoded] = {name: arrays[name].numpy() for name in received}
    for name in received:
        change = np.abs(results[False][name] - received[name]).max()
        assert np.abs(results[True][name] - results[False][name]).max() <= change * 2**-10, name


@pytest.mark.parametrize(
    ("value", "refused"),
    [("float16-delta", False), ("float32", False), ("bfloat16", True), (16, True)],
)
def test_the_store_and_the_coordinator_accept_only_known_encodings(
    value: object, refused: bool
) -> None:
    reason = round_refusal({UPDATE_ENCODING_KEY: value}, TrainingLimits())
    assert bool(reason) == refused, reason
    if refused:
        assert "update-encoding" in reason
        with pytest.raises(RunConfigError, match="update-encoding"):
            _settings(**{UPDATE_ENCODING_KEY: value})
    else:
        assert _settings(**{UPDATE_ENCODING_KEY: value}).update_encoding == value
