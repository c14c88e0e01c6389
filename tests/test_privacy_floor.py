"""The store's privacy floor: a round asking more than ``store.toml``'s ``[training]`` allows is
declined before any training, with exactly ``{"declined": 1}`` and no arrays.

The store's own ClientApp is called as a SuperNode would call it, with real Flower messages,
on a real store folder (SQLite gallery, key, store.toml) whose five SYNTHETIC members
(random unit vectors and random crops, as in ``test_gallery_class_weights``) consent to model
improvement: were the floor not applied, the store could train. Training itself is replaced
by a spy, so a round the floor lets through is seen reaching it, and one it declines is seen
not to.
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import random_crops, unit_vectors

import store_node.client_app as client_app
import store_node.trainer.round as store_round
from coordinator.run_config import TRAINING_DEFAULTS
from loyalnet.packed_backbone import PACKED_KEYS, BackboneLayout
from store_node.config import StoreConfig, StorePaths, TrainingLimits, read_config, write_config
from store_node.gallery import Gallery
from store_node.trainer.round import answer_of
from store_node.training.floor import round_refusal
from store_node.training.local import TrainingConfig, TrainingOutcome, train_store_round

MODEL = "mobilefacenet-ms1m-90a00ba1"
MEMBERS = 5
GLOBAL = {"conv.weight": torch.ones(4, 3), "bn.running_var": torch.full((4,), 0.5)}
LAYOUT = BackboneLayout.of(GLOBAL)
"""The ClientApp unpacks with this two-tensor layout here instead of MobileFaceNet's."""

pytestmark = pytest.mark.usefixtures("task_identity")


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store folder with five consenting synthetic members, two crops each."""
    root = tmp_path_factory.mktemp("floor") / "store"
    root.mkdir()
    paths = StorePaths(root)
    write_config(paths, StoreConfig(store_id="store-floor"))
    rng = np.random.default_rng(12)
    with Gallery.create(paths.database, paths.key) as gallery:
        for index in range(MEMBERS):
            member = f"M{index}"
            gallery.add_member(member, f"name of {member}")
            gallery.record_consent(member, "recognition,model_improvement", "2026-11", 365)
            gallery.add_templates(member, unit_vectors(rng, 2), MODEL, random_crops(rng, 2))
    return root


@pytest.fixture
def store(enrolled: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(enrolled, copy)  # keeps the key file's mode 0600
    return copy


@dataclass
class TrainingSpy:
    """Stands in for ``train_store_round``: records each call, returns the received model."""

    calls: list[TrainingConfig] = field(default_factory=list)

    def __call__(
        self, store_dir: Path, backbone: dict[str, torch.Tensor], config: TrainingConfig
    ) -> TrainingOutcome:
        self.calls.append(config)
        trained = {key: value + 0.1 for key, value in backbone.items()}
        return TrainingOutcome(trained, 10, MEMBERS, 2.0, 1.5, 0.1, "")


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> TrainingSpy:
    recorded = TrainingSpy()
    monkeypatch.setattr(store_round, "train_store_round", recorded)
    return recorded


def _limits(store: Path, **changes: Any) -> None:
    paths = StorePaths(store)
    config = read_config(paths)
    write_config(paths, replace(config, training=replace(config.training, **changes)))


def _round(store: Path, **changes: bool | int | float | None) -> Message:
    """The store's ClientApp's reply to a training message with the coordinator's defaults,
    ``server-round`` 1, and ``changes`` (None drops a key)."""
    settings: dict[str, Any] = {**TRAINING_DEFAULTS, "server-round": 1}
    for key, value in changes.items():
        if value is None:
            settings.pop(key, None)
        else:
            settings[key] = value
    content = RecordDict(
        {"arrays": ArrayRecord(LAYOUT.pack(GLOBAL)), "config": ConfigRecord(settings)}
    )
    message = Message(content, dst_node_id=1, message_type="train")
    context = Context(1, 1, {client_app.STORE_DIR_KEY: str(store)}, RecordDict(), {})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store_round, "backbone_layout", lambda: LAYOUT)
        return client_app.app(message, context)


def _assert_declined(reply: Message) -> None:
    assert not reply.has_error(), reply.error
    assert set(reply.content.array_records) == {"arrays"}
    assert not reply.content.array_records["arrays"]  # no model at all
    assert set(reply.content.metric_records) == {"metrics"}
    assert dict(reply.content.metric_records["metrics"]) == {"declined": 1}  # no count at all
    assert not reply.content.config_records


def _class_rows(store: Path) -> int:
    database = StorePaths(store).database
    connection = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
    try:
        ((count,),) = list(connection.execute("SELECT count(*) FROM class_weights"))
    finally:
        connection.close()
    return int(count)


def test_a_round_within_the_limits_trains(store: Path, spy: TrainingSpy) -> None:
    reply = _round(store, **{"proximal-mu": 0.01})
    assert not reply.has_error(), reply.error
    assert len(spy.calls) == 1 and spy.calls[0].seed == 1  # run seed 0 + server round 1
    metrics = reply.content.metric_records["metrics"]
    assert metrics["num-examples"] == 10 and metrics["declined"] == 0
    assert list(reply.content.array_records["arrays"]) == list(PACKED_KEYS)


@pytest.mark.parametrize(
    ("asked", "logged"),
    [
        ({"min-members": 3}, "min-members 3, below this store's limit"),
        ({"local-epochs": 6}, "local-epochs 6, above"),
        ({"learning-rate": 0.05}, "learning-rate 0.05, outside"),
        ({"learning-rate": 1e-6}, "learning-rate 1e-06, outside"),
        ({"freeze-batchnorm": False}, "live BatchNorm statistics"),
        ({"learning-rate": "0.001"}, "not valid"),  # a round the store cannot read
        ({"batch-size": 1}, "not valid"),
        ({"local-steps": 10}, "'local-steps', a setting this store does not know"),
        ({"learning_rate": 0.001}, "names one setting twice"),
        ({KEY_CLIPPING_NORM: -1.0}, "not a number > 0"),
    ],
)
def test_a_round_beyond_the_default_limits_is_declined_before_training(
    store: Path,
    spy: TrainingSpy,
    caplog: pytest.LogCaptureFixture,
    asked: dict[str, Any],
    logged: str,
) -> None:
    reply = _round(store, **asked)
    _assert_declined(reply)
    assert spy.calls == []  # nothing trained, no training data read
    assert _class_rows(store) == 0
    assert "this store declines the round" in caplog.text and logged in caplog.text


def test_the_store_sets_its_own_limits(
    store: Path, spy: TrainingSpy, caplog: pytest.LogCaptureFixture
) -> None:
    _limits(store, min_members=8)
    _assert_declined(_round(store, **{"min-members": 5}))
    assert "min_members = 8" in caplog.text
    assert spy.calls == []
    assert not _round(store, **{"min-members": 8}).has_error() and len(spy.calls) == 1

    _limits(store, min_members=5, max_local_epochs=10, max_learning_rate=0.1)
    _round(store, **{"local-epochs": 10, "learning-rate": 0.05})
    assert len(spy.calls) == 2

    _limits(store, require_frozen_batchnorm=False)
    _round(store, **{"freeze-batchnorm": False})
    assert len(spy.calls) == 3 and not spy.calls[-1].freeze_batchnorm


def test_a_store_requiring_clipping_declines_a_round_without_it(
    store: Path, spy: TrainingSpy, caplog: pytest.LogCaptureFixture
) -> None:
    _limits(store, require_clipping=True, max_clipping_norm=0.1)
    _assert_declined(_round(store))
    assert "no clipping_norm" in caplog.text and "require_clipping = true" in caplog.text
    _assert_declined(_round(store, **{KEY_CLIPPING_NORM: 0.5}))
    assert "max_clipping_norm = 0.1" in caplog.text
    assert spy.calls == []

    reply = _round(store, **{KEY_CLIPPING_NORM: 0.05})  # clipped by the mod, then sent
    assert not reply.has_error(), reply.error
    assert len(spy.calls) == 1
    sent = LAYOUT.unpack(reply.content.array_records["arrays"].to_torch_state_dict())
    update = torch.cat([(sent[k] - GLOBAL[k]).ravel() for k in GLOBAL])
    assert float(update.norm()) == pytest.approx(0.05, rel=1e-4)


def test_too_few_consenting_members_declines_with_no_count(
    store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The real training function: the store has 5 members, the round asks for 6."""
    reply = _round(store, **{"min-members": 6})
    _assert_declined(reply)
    assert "only 5 consenting members, the run needs 6" in caplog.text
    assert _class_rows(store) == 0


def test_a_declining_round_with_clipping_asked_is_sent_as_declined(store: Path) -> None:
    _assert_declined(_round(store, **{"min-members": 6, KEY_CLIPPING_NORM: 0.05}))


def test_the_store_never_trains_below_its_own_floor(store: Path) -> None:
    """Whatever the caller asks: ``train_store_round`` reads the floor itself."""
    _limits(store, min_members=6)
    outcome = train_store_round(store, GLOBAL, TrainingConfig(min_members=2))
    assert outcome.backbone is None and outcome.examples == 0
    assert "no fewer than 6" in outcome.declined and "min_members" in outcome.declined
    assert client_app.reply_metrics(answer_of(outcome), ArrayRecord()) == {"declined": 1}


def test_a_broken_store_toml_fails_the_round_without_saying_why(
    store: Path, spy: TrainingSpy
) -> None:
    """The store's own settings are broken: an error (the operator must act), not a decline."""
    paths = StorePaths(store)
    paths.config.write_text(paths.config.read_text().replace("min_members = 5", "min_members = 1"))
    with pytest.raises(client_app.StoreRoundError) as failed:  # Flower sends only this text
        _round(store)
    assert "LoyalnetError" in str(failed.value) and "min_members" not in str(failed.value)
    assert spy.calls == []


def test_the_coordinators_defaults_are_within_the_default_limits() -> None:
    """A chain running on defaults is never declined by a store keeping its defaults."""
    fedprox = {**TRAINING_DEFAULTS, "server-round": 3, "proximal-mu": 0.01}
    assert round_refusal(fedprox, TrainingLimits()) == ""
    assert round_refusal({**TRAINING_DEFAULTS, KEY_CLIPPING_NORM: 0.05}, TrainingLimits()) == ""


_ROUND_VALUES = st.one_of(
    st.booleans(),
    st.integers(-3, 12),
    st.integers(),
    st.integers(min_value=2**1024 - 2**970),  # beyond any float
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 0.1),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)
_ROUND_KEYS = st.sampled_from(
    [*TRAINING_DEFAULTS, "server-round", "proximal-mu", KEY_CLIPPING_NORM, "learning_rate", "x"]
)


@settings(max_examples=300, deadline=None)
@given(changes=st.dictionaries(_ROUND_KEYS, _ROUND_VALUES, max_size=4), clip=st.booleans())
def test_any_round_config_is_declined_or_within_the_limits(
    changes: dict[str, Any], clip: bool
) -> None:
    """Whatever a round sends, the check answers (no exception), and a round it lets through
    trains within the limits: here a store requiring clipping at most 0.1."""
    limits = TrainingLimits(require_clipping=clip, max_clipping_norm=0.1 if clip else None)
    settings_ = {**TRAINING_DEFAULTS, **changes}
    if round_refusal(settings_, limits):
        return
    config = TrainingConfig.from_run_config(settings_)
    assert config.min_members >= limits.min_members
    assert config.local_epochs <= limits.max_local_epochs
    assert limits.min_learning_rate <= config.learning_rate <= limits.max_learning_rate
    assert config.freeze_batchnorm
    clipping = settings_.get(KEY_CLIPPING_NORM)
    assert not clip or (isinstance(clipping, int | float) and 0 < clipping <= 0.1)


def test_a_round_purges_members_whose_consent_lapsed(store: Path, spy: TrainingSpy) -> None:
    """The SuperNode is the store's long-running process: each round purges lapsed consents
    before anything is trained, and the reply says nothing about it."""
    paths = StorePaths(store)
    long_ago = datetime.now(UTC) - timedelta(days=400)
    rng = np.random.default_rng(3)
    with Gallery.open(paths.database, paths.key) as gallery:
        gallery.add_member("LAPSED", "lapsed member")
        gallery.record_consent("LAPSED", "recognition,model_improvement", "2026-11", 30, long_ago)
        gallery.add_templates("LAPSED", unit_vectors(rng, 2), MODEL, random_crops(rng, 2), long_ago)
        before = {m.member_id: (m.templates, m.crops) for m in gallery.members(long_ago)}
    assert before["LAPSED"] == (2, 2)

    reply = _round(store)

    assert not reply.has_error(), reply.error
    assert len(spy.calls) == 1
    assert "purged" not in str(dict(reply.content.metric_records["metrics"]))
    with Gallery.open(paths.database, paths.key) as gallery:
        after = {m.member_id: (m.templates, m.crops) for m in gallery.members()}
        assert after["LAPSED"] == (0, 0)
        assert after["M0"] == (2, 2)
        assert any(entry.action.value == "purge" for entry in gallery.audit_log())
