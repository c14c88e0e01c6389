"""A private run's pieces without processes: run config, strategy composition, one round's
aggregation from hand-made replies, and the store's clipping mod."""

from __future__ import annotations

import math
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    FedAvg,
    FedProx,
)
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM
from numpy.typing import NDArray
from synthetic import FakeGrid

from coordinator.errors import RunConfigError
from coordinator.privacy_accountant import privacy_spent
from coordinator.run_config import FederationSettings, default_run_config
from coordinator.store_privacy import STORE_WEIGHT_KEY, StorePrivacy
from coordinator.strategy import WEIGHT_KEY, StoreRounds, build_strategy
from loyalnet.packed_backbone import PACKED_KEYS, BackboneLayout
from store_node.client_app import _packed_record, clip_when_asked, declining_reply
from store_node.trainer.answer import RoundAnswer, StoreRoundError

Arrays = dict[str, NDArray[np.float32]]

pytestmark = pytest.mark.usefixtures("task_identity")


def _settings(tmp_path: Path, **overrides: bool | int | float | str) -> FederationSettings:
    values = {**default_run_config(tmp_path), "min-stores": 2, "store-wait-seconds": 5}
    return FederationSettings.from_run_config({**values, **overrides})


def test_dp_is_off_by_default_and_the_strategy_is_unchanged(tmp_path: Path) -> None:
    defaults = default_run_config(tmp_path)
    assert defaults["dp-noise-multiplier"] == 0.0
    assert defaults["dp-clipping-norm"] == 0.05 and defaults["dp-delta"] == 1e-5
    settings = _settings(tmp_path)
    assert not settings.private
    strategy = build_strategy(settings)
    assert type(strategy.inner) is FedAvg
    assert strategy.inner.weighted_by_key == WEIGHT_KEY


@pytest.mark.parametrize(("name", "kind"), [("fedavg", FedAvg), ("fedprox", FedProx)])
def test_dp_wraps_the_averaging_inside_the_store_rounds(
    tmp_path: Path, name: str, kind: type[FedAvg]
) -> None:
    overrides: dict[str, bool | int | float | str] = {
        "strategy": name,
        "dp-noise-multiplier": 1.2,
        "dp-clipping-norm": 0.1,
    }
    settings = _settings(tmp_path, **overrides)
    strategy = build_strategy(settings)
    assert isinstance(strategy, StoreRounds) and strategy.min_stores == 2
    private = strategy.inner
    assert isinstance(private, StorePrivacy)
    assert isinstance(private, DifferentialPrivacyClientSideFixedClipping)
    assert private.noise_multiplier == 1.2 and private.clipping_norm == 0.1
    assert private.delta == 1e-5 and private.accountant is None  # ours reports epsilon
    assert type(private.strategy) is kind
    assert isinstance(private.strategy, FedAvg)
    assert private.strategy.weighted_by_key == STORE_WEIGHT_KEY  # every store weighs the same
    strategy.summary()


@pytest.mark.parametrize(
    "overrides",
    [
        {"dp-noise-multiplier": -1.0},
        {"dp-clipping-norm": 0.0},
        {"dp-delta": 0.0},
        {"dp-delta": 1.0},
        {"dp-noise-multiplier": "1"},
        {"dp-noise-multiplier": 1.0, "freeze-batchnorm": False},
    ],
)
def test_run_config_refuses_bad_dp_values(
    tmp_path: Path, overrides: dict[str, bool | int | float | str]
) -> None:
    with pytest.raises(RunConfigError):
        _settings(tmp_path, **overrides)


# --- one private round through the whole composed strategy, from hand-made replies ---

SHAPE = (200, 500)  # 100,000 numbers, enough to measure the noise's spread


def _global_arrays() -> Arrays:
    generator = np.random.default_rng(0)
    return {
        "conv.weight": generator.normal(0, 0.1, SHAPE).astype(np.float32),
        "bn.weight": np.ones(64, np.float32),
        "bn.running_mean": generator.normal(0, 0.03, 64).astype(np.float32),
        # Like the pretrained backbone's dead channels: noise would make these negative.
        "bn.running_var": np.full(64, 1e-30, np.float32),
    }


def _record(arrays: Arrays) -> ArrayRecord:
    return ArrayRecord({key: Array(value) for key, value in arrays.items()})


def _update(global_arrays: Arrays, step: float) -> Arrays:
    """The global arrays with ``step`` added to every trainable number (statistics kept)."""
    return {
        key: value if "running" in key else value + np.float32(step)
        for key, value in global_arrays.items()
    }


def _reply(to: Message, arrays: Arrays | None, examples: int) -> Message:
    if arrays is None:  # a declining store's reply, exactly (store_node.client_app)
        return declining_reply(to)
    metrics = MetricRecord(
        {
            WEIGHT_KEY: examples,
            "members": 5,
            "declined": 0,
            "loss-first-epoch": 1.0,
            "loss-last-epoch": 0.5,
            "train-seconds": 2.0,
            "arrays-bytes": 0,
        }
    )
    return Message(RecordDict({"arrays": _record(arrays), "metrics": metrics}), reply_to=to)


def _private_round(
    tmp_path: Path, sigma: float, clipping: float, steps: tuple[float, float]
) -> tuple[Arrays, ArrayRecord | None, MetricRecord]:
    """Round 1 with 4 stores: two train (10 and 30 crops), one declines, one fails."""
    strategy = build_strategy(
        _settings(tmp_path, **{"dp-noise-multiplier": sigma, "dp-clipping-norm": clipping})
    )
    start = _global_arrays()
    grid = cast(Grid, FakeGrid([11, 12, 13, 14]))
    asked = list(strategy.configure_train(1, _record(start), ConfigRecord({"seed": 0}), grid))
    assert len(asked) == 4
    for message in asked:
        assert message.content.config_records["config"][KEY_CLIPPING_NORM] == clipping
    replies = [
        _reply(asked[0], _update(start, steps[0]), 10),
        _reply(asked[1], _update(start, steps[1]), 30),
        _reply(asked[2], None, 0),
        Message(Error(code=1, reason="training failed"), reply_to=asked[3]),
    ]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert metrics is not None
    assert metrics["stores-trained"] == 2 and metrics["stores-declined"] == 1
    assert metrics["stores-failed"] == 1
    assert metrics[WEIGHT_KEY] == 40 and STORE_WEIGHT_KEY not in metrics
    assert metrics["loss-last-epoch"] == pytest.approx(0.5)
    return start, arrays, metrics


def test_a_private_round_averages_the_trained_stores_equally(tmp_path: Path) -> None:
    # Nearly no noise, to see the average: equal weights, not 10:30 by crops.
    start, arrays, metrics = _private_round(tmp_path, 1e-6, 1.0, (0.001, -0.001))
    assert arrays is not None
    model = arrays.to_numpy_ndarrays()
    assert np.allclose(model[0], start["conv.weight"], atol=1e-5)  # (+0.001 - 0.001) / 2
    assert metrics["dp-clipped-here"] == 0  # both within C, as clipped stores send them
    assert epsilon_is_accounted(metrics, rounds=1, sigma=1e-6)


def test_a_private_round_adds_noise_for_the_stores_averaged(tmp_path: Path) -> None:
    sigma, clipping = 1.0, 0.5
    start, arrays, metrics = _private_round(tmp_path, sigma, clipping, (0.0, 0.0))
    assert arrays is not None
    noise = arrays["conv.weight"].numpy() - start["conv.weight"]
    expected = sigma * clipping / 2  # two stores trained; the declined and failed are no part
    assert metrics["dp-noise-stddev"] == pytest.approx(expected)
    assert float(noise.std()) == pytest.approx(expected, rel=0.02)
    assert abs(float(noise.mean())) < 5 * expected / math.sqrt(noise.size)
    # The frozen BatchNorm statistics are the global ones, bit for bit: no negative variance.
    for key in ("bn.running_mean", "bn.running_var"):
        assert np.array_equal(arrays[key].numpy(), start[key])
    assert not np.array_equal(arrays["bn.weight"].numpy(), start["bn.weight"])
    assert epsilon_is_accounted(metrics, rounds=1, sigma=sigma)


def test_the_coordinator_clips_what_a_store_did_not(tmp_path: Path) -> None:
    """A store without the clipping mod (an old ClientApp) sends its update unclipped."""
    start, arrays, metrics = _private_round(tmp_path, 1e-6, 0.5, (0.01, 0.01))
    assert arrays is not None and metrics["dp-clipped-here"] == 2
    length = 0.01 * math.sqrt(100_064)  # each store's update: 3.16, clipped to 0.5
    step = arrays["conv.weight"].numpy() - start["conv.weight"]
    assert np.allclose(step, 0.01 * 0.5 / length, atol=1e-5)


def test_epsilon_counts_only_rounds_that_released_a_model(tmp_path: Path) -> None:
    strategy = build_strategy(_settings(tmp_path, **{"dp-noise-multiplier": 1.0}))
    start = _record(_global_arrays())
    grid = cast(Grid, FakeGrid([11, 12]))
    expected = []
    for server_round, trains in ((1, True), (2, False), (3, True)):
        asked = list(strategy.configure_train(server_round, start, ConfigRecord(), grid))
        step = _update(_global_arrays(), 1e-4) if trains else None
        replies = [_reply(message, step, 10 if trains else 0) for message in asked]
        arrays, metrics = strategy.aggregate_train(server_round, replies)
        assert metrics is not None and (arrays is not None) == trains
        expected.append(privacy_spent(1 if server_round < 3 else 2, 1.0, 1e-5).epsilon)
        assert metrics["epsilon"] == expected[-1]
    assert expected[0] == pytest.approx(4.7285, abs=1e-3)
    assert expected[2] == pytest.approx(7.08, abs=0.01)


def epsilon_is_accounted(metrics: MetricRecord, rounds: int, sigma: float) -> bool:
    spent = privacy_spent(rounds, sigma, 1e-5)
    return metrics["epsilon"] == spent.epsilon and metrics["dp-delta"] == 1e-5


# --- the store's side: Flower's fixedclipping_mod, only when asked and when trained ---


def _instruction(arrays: Arrays, clipping: float | None) -> Message:
    config = ConfigRecord({"seed": 0})
    if clipping is not None:
        config[KEY_CLIPPING_NORM] = clipping
    content = RecordDict({"arrays": _record(arrays), "config": config})
    return Message(content, dst_node_id=1, message_type="train")


def _sent_update(reply: Message, start: Arrays) -> float:
    """The L2 norm of what the reply sends minus the start, over all its arrays."""
    sent = reply.content.array_records["arrays"]
    return math.sqrt(
        sum(
            float(np.sum((sent[key].numpy().astype(np.float64) - value) ** 2))
            for key, value in start.items()
        )
    )


@pytest.mark.parametrize(("clipping", "step", "norm"), [(0.5, 0.01, 0.5), (50.0, 0.01, None)])
def test_the_store_clips_its_update_when_asked(
    clipping: float, step: float, norm: float | None
) -> None:
    start = _global_arrays()
    trained = _update(start, step)  # norm 0.01 * sqrt(100,064) = 3.16
    message = _instruction(start, clipping)
    context = Context(1, 1, {}, RecordDict(), {})
    reply = clip_when_asked(message, context, lambda m, _: _reply(m, trained, 9))
    assert not reply.has_error()
    expected = norm if norm is not None else _sent_update(_reply(message, trained, 9), start)
    assert _sent_update(reply, start) == pytest.approx(expected, rel=1e-4)
    assert reply.content.metric_records["metrics"][WEIGHT_KEY] == 9


def test_the_store_sends_as_trained_when_not_asked_or_when_declining() -> None:
    start = _global_arrays()
    trained = _update(start, 0.01)
    unasked = _instruction(start, None)
    context = Context(1, 1, {}, RecordDict(), {})
    reply = clip_when_asked(unasked, context, lambda m, _: _reply(m, trained, 9))
    assert not reply.has_error()
    assert _sent_update(reply, start) == pytest.approx(0.01 * math.sqrt(100_064), rel=1e-4)

    declining = clip_when_asked(_instruction(start, 0.5), context, lambda m, _: _reply(m, None, 0))
    assert not declining.has_error()
    assert not declining.content.array_records["arrays"]
    assert declining.content.metric_records["metrics"] == {"declined": 1}


def test_a_clipping_error_answers_the_coordinators_message() -> None:
    """Flower's mod would address it to the store's own reply, which is never delivered."""
    start = _global_arrays()
    message = _instruction(start, 0.5)
    message.metadata.__dict__["_message_id"] = "round-1-store-1"  # the SuperLink sets it
    reordered = dict(reversed(list(_update(start, 0.01).items())))
    context = Context(1, 1, {}, RecordDict(), {})
    reply = clip_when_asked(message, context, lambda m, _: _reply(m, reordered, 9))
    assert reply.has_error()
    assert reply.metadata.reply_to_message_id == "round-1-store-1"


def test_the_store_sends_its_packed_arrays_in_the_order_they_came() -> None:
    """Flower's fixedclipping_mod pairs a reply's arrays with the received ones in order."""
    state = {
        "b.weight": torch.ones(2),
        "a.running_var": torch.ones(3),
        "a.running_mean": torch.zeros(3),
    }
    packed = BackboneLayout.of(state).pack(state)
    trained = RoundAnswer({name: packed[name].numpy() for name in reversed(list(packed))})
    assert list(_packed_record(trained, list(PACKED_KEYS))) == list(PACKED_KEYS)
    with pytest.raises(StoreRoundError, match="differ from the global model"):
        _packed_record(trained, list(PACKED_KEYS)[:2])
