"""``store.toml`` read strictly: every bad type, range, unknown key or section refused with a
message naming the file, the key, the value and what is valid; the written file round-trips;
random documents never crash with anything but a LoyalnetError (hypothesis)."""

from __future__ import annotations

import contextlib
import math
import tomllib
from dataclasses import replace
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalnet.errors import LoyalnetError
from store_node.config import (
    StoreConfig,
    StorePaths,
    TrainingLimits,
    new_store_id,
    read_config,
    write_config,
)
from store_node.gallery.gallery import MAX_RETENTION_DAYS

STORE_KEYS = ("store_id", "target_fpir", "policy_version", "retention_days", "flip", "superlink")
TRAINING_KEYS = (
    "min_members",
    "max_local_epochs",
    "min_learning_rate",
    "max_learning_rate",
    "require_frozen_batchnorm",
    "require_clipping",
    "max_clipping_norm",
)


def _write(folder: Path, text: str) -> StorePaths:
    paths = StorePaths(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(text, encoding="utf-8")
    return paths


def _refused(paths: StorePaths, *parts: str) -> str:
    with pytest.raises(LoyalnetError) as caught:
        read_config(paths)
    message = str(caught.value)
    assert "\n" not in message
    for part in (str(paths.config), *parts):
        assert part in message, (part, message)
    return message


def test_the_written_file_shows_every_limit_and_round_trips(tmp_path: Path) -> None:
    paths = StorePaths(tmp_path)
    config = StoreConfig(store_id=new_store_id())
    write_config(paths, config)
    text = paths.config.read_text()
    assert "[training]" in text
    parsed = tomllib.loads(text)
    assert set(parsed) == {*STORE_KEYS, "training"}
    assert set(parsed["training"]) == set(TRAINING_KEYS) - {"max_clipping_norm"}
    assert "# max_clipping_norm" in text  # shown, commented out: no maximum by default
    assert read_config(paths) == config
    assert config.training == TrainingLimits()
    assert (config.training.min_members, config.training.max_local_epochs) == (5, 5)

    custom = replace(
        config,
        retention_days=MAX_RETENTION_DAYS,
        superlink="hq.acme.example:8000",
        training=TrainingLimits(
            min_members=8,
            max_local_epochs=2,
            min_learning_rate=0.0001,
            max_learning_rate=0.001,
            require_frozen_batchnorm=False,
            require_clipping=True,
            max_clipping_norm=0.05,
        ),
    )
    write_config(paths, custom)
    assert read_config(paths) == custom


def test_a_file_without_the_training_table_gets_the_default_limits(tmp_path: Path) -> None:
    old = 'store_id = "store-042"\ntarget_fpir = 0.001\nretention_days = 30\n'
    config = read_config(_write(tmp_path, old))
    assert config.training == TrainingLimits()
    assert config.retention_days == 30
    partial = read_config(_write(tmp_path, old + "[training]\nmin_members = 9\n"))
    assert partial.training == TrainingLimits(min_members=9)


def test_real_numbers_take_integers_and_become_floats(tmp_path: Path) -> None:
    text = 'store_id = "s"\n[training]\nmax_learning_rate = 1\nmin_learning_rate = 1\n'
    limits = read_config(_write(tmp_path, text)).training
    assert limits.max_learning_rate == 1.0 and isinstance(limits.max_learning_rate, float)


@pytest.mark.parametrize(
    ("line", "parts"),
    [
        ("retention_days = 1.5", ["retention_days = 1.5", "wrong type", "whole number", "3650"]),
        ("retention_days = 100000", ["retention_days = 100000", "out of range", "1 to 3650"]),
        ("retention_days = 0", ["retention_days = 0", "out of range"]),
        ("retention_days = true", ["retention_days = true", "wrong type"]),
        ('retention_days = "365"', ['retention_days = "365"', "wrong type"]),
        ("target_fpir = 0.9", ["target_fpir = 0.9", "out of range", "1e-6 to 0.5"]),
        ("target_fpir = 0.0", ["target_fpir = 0.0", "out of range"]),
        ("target_fpir = nan", ["target_fpir = nan", "out of range"]),
        ("target_fpir = inf", ["target_fpir = inf", "out of range"]),
        ("target_fpir = false", ["target_fpir = false", "wrong type"]),
        ('target_fpir = "0.001"', ['target_fpir = "0.001"', "wrong type"]),
        ('flip = "yes"', ['flip = "yes"', "true or false"]),
        ("flip = 1", ["flip = 1", "true or false"]),
        ('policy_version = ""', ['policy_version = ""', "printable label"]),
        ('policy_version = " 2026-11"', ["policy_version", "without surrounding spaces"]),
        ('policy_version = "a\\nb"', ['"a\\nb"', "printable label"]),
        (f'policy_version = "{"v" * 65}"', ["policy_version", "1 to 64 characters"]),
        ("policy_version = 2026", ["policy_version = 2026", "wrong type"]),
        ('superlink = "hq.acme.example"', ["superlink", "HOST:PORT"]),
        ('superlink = "hq:0"', ["superlink", "HOST:PORT"]),
        ('superlink = "hq:70000"', ["superlink", "port 1 to 65535"]),
        ('superlink = "h q:8000"', ["superlink"]),
    ],
)
def test_a_bad_top_level_value_is_refused(tmp_path: Path, line: str, parts: list[str]) -> None:
    key = line.split(" = ")[0]
    others = [f"{k} = {v}" for k, v in (("store_id", '"store-1"'),) if k != key]
    message = _refused(_write(tmp_path, "\n".join([*others, line]) + "\n"), *parts)
    assert "fix the line" in message


@pytest.mark.parametrize(
    "store_id",
    ["", "-store", "store 42", "store/42", "s" * 64, "störe", "store.42"],
)
def test_a_store_id_the_chain_cannot_register_is_refused(tmp_path: Path, store_id: str) -> None:
    paths = _write(tmp_path, f"store_id = {tomli_w.dumps({'x': store_id})[4:]}")
    _refused(paths, "store_id = ", "letters, digits")
    with pytest.raises(LoyalnetError, match="StoreConfig store_id"):
        StoreConfig(store_id=store_id)


def test_a_file_without_store_id_is_refused(tmp_path: Path) -> None:
    _refused(_write(tmp_path, "retention_days = 30\n"), "no store_id", 'store_id = "store-042"')


@pytest.mark.parametrize(
    ("table", "parts"),
    [
        ("min_members = 1", ["[training] min_members = 1", "out of range", "2 to"]),
        ("min_members = 5.0", ["[training] min_members = 5.0", "wrong type", "whole number"]),
        ("min_members = true", ["min_members = true", "wrong type"]),
        ("max_local_epochs = 0", ["[training] max_local_epochs = 0", "1 to 100"]),
        ("max_local_epochs = 101", ["max_local_epochs = 101", "out of range"]),
        ("max_local_epochs = 2.5", ["max_local_epochs = 2.5", "wrong type"]),
        ("min_learning_rate = 0", ["min_learning_rate = 0", "> 0 and <= 1"]),
        ("max_learning_rate = -0.1", ["max_learning_rate = -0.1", "out of range"]),
        ("max_learning_rate = 2", ["max_learning_rate = 2", "out of range"]),
        ("max_learning_rate = nan", ["max_learning_rate = nan", "out of range"]),
        ('max_learning_rate = "0.01"', ["max_learning_rate", "wrong type"]),
        ("require_frozen_batchnorm = 1", ["require_frozen_batchnorm = 1", "true or false"]),
        ('require_clipping = "true"', ['require_clipping = "true"', "true or false"]),
        ("require_clipping = true\nmax_clipping_norm = 0", ["max_clipping_norm = 0", "> 0"]),
        ("require_clipping = true\nmax_clipping_norm = inf", ["max_clipping_norm = inf"]),
        (
            "min_learning_rate = 0.1\nmax_learning_rate = 0.01",
            ["min_learning_rate = 0.1", "max_learning_rate = 0.01", "<="],
        ),
        ("max_clipping_norm = 0.1", ["max_clipping_norm = 0.1", "require_clipping = true"]),
    ],
)
def test_a_bad_limit_is_refused(tmp_path: Path, table: str, parts: list[str]) -> None:
    _refused(_write(tmp_path, f'store_id = "s"\n[training]\n{table}\n'), *parts)


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("retention = 30\n", ["retention = 30", "unknown setting", "retention_days"]),
        ("[training]\nmin_member = 3\n", ["[training] min_member = 3", "unknown", "min_members"]),
        ("[gallery]\npath = 'x'\n", ["unknown section [gallery]", "[training]"]),
        ("[training.extra]\na = 1\n", ["unknown section [training.extra]"]),
        ("training = 5\n", ["training = 5", "[training] table"]),
        ("[[training]]\nmin_members = 5\n", ["training = [", "[training] table"]),
        ("min_members = 3\n", ["min_members = 3", "unknown setting"]),  # not at the top level
        ('"bad\\u0007key" = 1\n', ["bad\\x07key", "unknown setting"]),
    ],
)
def test_unknown_keys_and_sections_are_refused(tmp_path: Path, text: str, parts: list[str]) -> None:
    message = _refused(_write(tmp_path, 'store_id = "s"\n' + text), *parts)
    assert "\x07" not in message


def test_broken_files_are_refused_with_their_name(tmp_path: Path) -> None:
    _refused(_write(tmp_path / "a", "store_id = \n"), "not valid TOML")
    paths = StorePaths(tmp_path / "b")
    (tmp_path / "b").mkdir()
    paths.config.write_bytes(b'store_id = "\xff"\n')
    _refused(paths, "not valid TOML")
    with pytest.raises(LoyalnetError, match="not a store folder"):
        read_config(StorePaths(tmp_path / "c"))


def test_records_built_in_code_refuse_bad_values() -> None:
    with pytest.raises(LoyalnetError, match=r"StoreConfig retention_days = 1\.5 .*3650"):
        StoreConfig(store_id="s", retention_days=1.5)  # type: ignore[arg-type]
    with pytest.raises(LoyalnetError, match="retention_days = 100000 is out of range"):
        StoreConfig(store_id="s", retention_days=100_000)
    with pytest.raises(LoyalnetError, match="target_fpir = true is of the wrong type"):
        StoreConfig(store_id="s", target_fpir=True)
    with pytest.raises(LoyalnetError, match="TrainingLimits min_members = 1 is out of range"):
        TrainingLimits(min_members=1)
    with pytest.raises(LoyalnetError, match="max_local_epochs = true"):
        TrainingLimits(max_local_epochs=True)
    with pytest.raises(LoyalnetError, match="must be a TrainingLimits"):
        StoreConfig(store_id="s", training={"min_members": 5})  # type: ignore[arg-type]
    assert isinstance(StoreConfig(store_id="s", target_fpir=1 / 1000).target_fpir, float)
    assert TrainingLimits(max_learning_rate=1).max_learning_rate == 1.0


# --- property-based: random documents ----------------------------------------------------------

_SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-3, max_value=4000),
    st.integers(min_value=2**1024 - 2**970),  # beyond any float (TOML itself allows 64 bits)
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=1),
    st.text(max_size=70),
    st.sampled_from(["store-042", "2026-11", "hq.example:8000", "", " x", "a:1"]),
    st.dates(),
    st.times(),
    st.datetimes(),
)
_VALUES = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3))
_STORE_NAMES = st.sampled_from([*STORE_KEYS, "training"]) | st.text(min_size=1, max_size=12)
_LIMIT_NAMES = st.sampled_from(TRAINING_KEYS) | st.text(min_size=1, max_size=12)


REUSED_TMP_PATH = [HealthCheck.function_scoped_fixture]  # each example overwrites store.toml


def _table(names: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    values = _VALUES | st.dictionaries(names, _SCALARS, max_size=2)
    return st.dictionaries(names, values, max_size=8)


def _document(top: dict[str, Any], training: dict[str, Any], with_training: bool) -> Any:
    return {**top, "training": training} if with_training else top


_RANDOM_DOCUMENTS = st.builds(
    _document,
    _table(_STORE_NAMES),
    _table(_LIMIT_NAMES),
    st.booleans(),
)
_DEFAULT_DOCUMENT = {
    "store_id": "store-042",
    "target_fpir": 0.001,
    "retention_days": 365,
    "training": {"min_members": 5, "max_local_epochs": 5, "max_learning_rate": 0.01},
}


def _mutated(changes: dict[str, Any], training_changes: dict[str, Any], drop: bool) -> Any:
    """The default document with some keys changed (most documents stay nearly valid)."""
    document: dict[str, Any] = {**_DEFAULT_DOCUMENT, **changes}
    if isinstance(document.get("training"), dict):
        document["training"] = {**document["training"], **training_changes}
    if drop:
        document.pop("training", None)
    return document


_NEAR_DOCUMENTS = st.builds(
    _mutated,
    st.dictionaries(st.sampled_from(STORE_KEYS), _SCALARS, max_size=3),
    st.dictionaries(st.sampled_from(TRAINING_KEYS), _SCALARS, max_size=3),
    st.booleans(),
)
_DOCUMENTS = _RANDOM_DOCUMENTS | _NEAR_DOCUMENTS


def _assert_in_ranges(config: StoreConfig) -> None:
    assert 1e-6 <= config.target_fpir <= 0.5 and isinstance(config.target_fpir, float)
    assert type(config.retention_days) is int and 1 <= config.retention_days <= MAX_RETENTION_DAYS
    assert type(config.flip) is bool
    for label in (config.store_id, config.policy_version):
        assert 0 < len(label) <= 64 and label.isprintable() and label == label.strip()
    limits = config.training
    assert type(limits.min_members) is int and limits.min_members >= 2
    assert type(limits.max_local_epochs) is int and 1 <= limits.max_local_epochs <= 100
    assert 0 < limits.min_learning_rate <= limits.max_learning_rate <= 1
    assert type(limits.require_frozen_batchnorm) is bool and type(limits.require_clipping) is bool
    if limits.max_clipping_norm is not None:
        assert math.isfinite(limits.max_clipping_norm) and limits.max_clipping_norm > 0
        assert limits.require_clipping


@settings(max_examples=300, deadline=None, suppress_health_check=REUSED_TMP_PATH)
@given(document=_DOCUMENTS)
def test_random_documents_are_read_or_refused_with_a_loyalnet_error(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    paths = _write(tmp_path, tomli_w.dumps(document))
    try:
        config = read_config(paths)
    except LoyalnetError as err:
        assert str(paths.config) in str(err) and "\n" not in str(err)
        return
    _assert_in_ranges(config)
    write_config(paths, config)  # what was accepted is written back and reads the same
    assert read_config(paths) == config


@settings(max_examples=200, deadline=None, suppress_health_check=REUSED_TMP_PATH)
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_random_text_is_read_or_refused_with_a_loyalnet_error(tmp_path: Path, text: str) -> None:
    paths = _write(tmp_path, 'store_id = "s"\n' + text)
    with contextlib.suppress(LoyalnetError):
        _assert_in_ranges(read_config(paths))


_VALID_LIMITS = st.builds(
    lambda members, epochs, rates, frozen, clip, norm: TrainingLimits(
        min_members=members,
        max_local_epochs=epochs,
        min_learning_rate=min(rates),
        max_learning_rate=max(rates),
        require_frozen_batchnorm=frozen,
        require_clipping=clip or norm is not None,
        max_clipping_norm=norm,
    ),
    st.integers(2, 1_000_000),
    st.integers(1, 100),
    st.tuples(st.floats(1e-9, 1.0), st.floats(1e-9, 1.0)),
    st.booleans(),
    st.booleans(),
    st.none() | st.floats(1e-9, 1e9),
)
_VALID_CONFIGS = st.builds(
    StoreConfig,
    store_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}", fullmatch=True),
    target_fpir=st.floats(1e-6, 0.5),
    policy_version=st.text(min_size=1, max_size=64).filter(
        lambda s: s.isprintable() and s == s.strip()
    ),
    retention_days=st.integers(1, MAX_RETENTION_DAYS),
    flip=st.booleans(),
    superlink=st.sampled_from(["", "hq.acme.example:8000", "[::1]:443", "10.0.0.1:1"]),
    training=_VALID_LIMITS,
)


@settings(max_examples=150, deadline=None, suppress_health_check=REUSED_TMP_PATH)
@given(config=_VALID_CONFIGS)
def test_every_valid_config_round_trips(tmp_path: Path, config: StoreConfig) -> None:
    paths = StorePaths(tmp_path)
    write_config(paths, config)
    assert read_config(paths) == config


def test_datetime_values_are_refused_not_crashed(tmp_path: Path) -> None:
    for value in (date(2026, 1, 1), time(1, 2), datetime(2026, 1, 1)):
        paths = _write(tmp_path, tomli_w.dumps({"store_id": "s", "retention_days": value}))
        _refused(paths, "retention_days = ", "wrong type")
