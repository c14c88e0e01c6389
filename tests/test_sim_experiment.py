"""Reading and checking experiment files for ``loyalnet sim run``."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

import simulations.experiment as experiment_module
from coordinator.run_config import TRAINING_DEFAULTS
from loyalnet.errors import LoyalnetError
from simulations.experiment import (
    EvaluationSpec,
    Experiment,
    ExperimentError,
    MembersSpec,
    PrivacySpec,
    StoreGroup,
    TrainingSpec,
    experiment_from_dict,
    load_experiment,
)

# Every key set, none at its default, so that a key read into the wrong field shows.
FULL = """
name = "full"
seed = 11
rounds = 3
strategies = ["fedprox", "none", "fedavg-dp"]
proximal_mu = 0.1

[[stores]]
condition = "clean"
count = 2

[[stores]]
condition = "yale"
count = 2

[[stores]]
condition = "low_resolution"

[[stores]]
condition = "clean"
count = 1

[[stores]]
condition = "motion_blur"
count = 1

[[stores]]
condition = "low_resolution"
count = 1

[members]
lfw_members = 50
yale_members = 20
enrol_images = 3
yale_enrol_images = 10
probe_images = 2
sizes = "dirichlet"
dirichlet_alpha = 2
min_store_members = 4
strangers_per_store = 30

[training]
local_epochs = 2
learning_rate = 0.01
batch_size = 16
weight_decay = 0
margin = 0.2
scale = 64
min_members = 3

[privacy]
noise_multiplier = 0.5
clipping_norm = 0.1
delta = 1e-6

[evaluation]
heldout_lfw_people = 30
heldout_images = 4
lfw_folds = 2
lfw_every_round = true
fpir = 0.05
"""

HEAD = 'seed = 1\nrounds = 2\nstrategies = ["fedavg"]\n'
STORES = '[[stores]]\ncondition = "clean"\ncount = 2\n'


def _write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_full_file_is_read_into_every_field(tmp_path: Path) -> None:
    path = _write(tmp_path, FULL)
    assert load_experiment(path) == Experiment(
        name="full",
        seed=11,
        rounds=3,
        stores=(
            StoreGroup("clean", 2),
            StoreGroup("yale", 2),
            StoreGroup("low_resolution", 1),
            StoreGroup("clean", 1),
            StoreGroup("motion_blur", 1),
            StoreGroup("low_resolution", 1),
        ),
        strategies=("fedprox", "none", "fedavg-dp"),
        members=MembersSpec(
            lfw_members=50,
            yale_members=20,
            enrol_images=3,
            yale_enrol_images=10,
            probe_images=2,
            sizes="dirichlet",
            dirichlet_alpha=2.0,
            min_store_members=4,
            strangers_per_store=30,
        ),
        training=TrainingSpec(
            local_epochs=2,
            learning_rate=0.01,
            batch_size=16,
            weight_decay=0.0,
            margin=0.2,
            scale=64.0,
            min_members=3,
        ),
        proximal_mu=0.1,
        privacy=PrivacySpec(noise_multiplier=0.5, clipping_norm=0.1, delta=1e-6),
        evaluation=EvaluationSpec(
            heldout_lfw_people=30,
            heldout_images=4,
            lfw_folds=2,
            lfw_every_round=True,
            fpir=0.05,
        ),
        source=path,
    )


def test_store_and_hard_conditions_follow_file_order(tmp_path: Path) -> None:
    experiment = load_experiment(_write(tmp_path, FULL))
    assert experiment.store_conditions() == [
        "clean",
        "clean",
        "yale",
        "yale",
        "low_resolution",
        "clean",
        "motion_blur",
        "low_resolution",
    ]
    assert experiment.hard_conditions() == ["yale", "low_resolution", "motion_blur"]


def test_integers_in_float_keys_become_floats(tmp_path: Path) -> None:
    experiment = load_experiment(_write(tmp_path, FULL))
    # 2, 0 and 64 were written as TOML integers.
    assert isinstance(experiment.members.dirichlet_alpha, float)
    assert isinstance(experiment.training.weight_decay, float)
    assert isinstance(experiment.training.scale, float)


def test_docstring_example_reads_with_the_defaults(tmp_path: Path) -> None:
    doc = experiment_module.__doc__ or ""
    match = re.search(r"```toml\n(.*?)```", doc, re.DOTALL)
    assert match is not None, "the module docstring should show an example TOML file"
    experiment = load_experiment(_write(tmp_path, match.group(1)))
    assert experiment.members == MembersSpec()
    assert experiment.training == TrainingSpec()
    assert experiment.privacy == PrivacySpec()
    assert experiment.evaluation == EvaluationSpec()
    assert experiment.strategies == experiment_module.STRATEGIES
    assert set(experiment.store_conditions()) == {"clean", "low_light", "yale"}


def test_minimal_file_takes_defaults_and_its_name_from_the_file(tmp_path: Path) -> None:
    experiment = load_experiment(_write(tmp_path, HEAD + STORES, name="night-shift.toml"))
    assert experiment.name == "night-shift"
    assert experiment.proximal_mu == 0.01
    assert experiment.members == MembersSpec()
    assert experiment.stores == (StoreGroup("clean", 2),)
    # A group without a count is one store.
    single = load_experiment(_write(tmp_path, HEAD + '[[stores]]\ncondition = "grayscale"\n'))
    assert single.stores == (StoreGroup("grayscale", 1),)


def test_as_dict_is_json_and_reads_back(tmp_path: Path) -> None:
    path = _write(tmp_path, FULL)
    experiment = load_experiment(path)
    record = json.loads(json.dumps(experiment.as_dict()))
    assert record["source"] == str(path)
    assert record["members"]["sizes"] == "dirichlet"
    del record["source"]
    assert experiment_from_dict(record) == replace(experiment, source=None)


def test_run_config_has_the_coordinators_training_keys() -> None:
    defaults = TrainingSpec().run_config()
    assert defaults == {k: v for k, v in TRAINING_DEFAULTS.items() if k != "seed"}
    custom = TrainingSpec(local_epochs=3, learning_rate=0.02, min_members=4).run_config()
    assert custom["local-epochs"] == 3
    assert custom["learning-rate"] == 0.02
    assert custom["min-members"] == 4
    assert custom["freeze-batchnorm"] is TRAINING_DEFAULTS["freeze-batchnorm"]
    # The stores check each value's type against the default's.
    assert {k: type(v) for k, v in custom.items()} == {
        k: type(TRAINING_DEFAULTS[k]) for k in custom
    }


def test_from_dict_without_a_file_needs_a_name() -> None:
    data = tomllib.loads(HEAD + STORES)
    with pytest.raises(ExperimentError, match="name is missing"):
        experiment_from_dict(data)
    assert experiment_from_dict({**data, "name": "x"}).name == "x"


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (HEAD + "round = 3\n" + STORES, ["unknown key round ", "rounds", "strategies"]),
        (
            HEAD + STORES + "[members]\nenrol_image = 3\n",
            ["unknown key members.enrol_image ", "enrol_images", "strangers_per_store"],
        ),
        (HEAD + '[[stores]]\ncondition = "clean"\ncounts = 2\n', ["stores[0].counts"]),
        (
            'seed = true\nrounds = 2\nstrategies = ["fedavg"]\n' + STORES,
            ["seed = true", "whole number"],
        ),
        (HEAD + STORES + "[members]\nenrol_images = true\n", ["members.enrol_images = true"]),
        (HEAD + STORES + "[members]\nenrol_images = 2.0\n", ["members.enrol_images = 2.0"]),
        (
            HEAD + STORES + '[training]\nlearning_rate = "0.01"\n',
            ['training.learning_rate = "0.01"', "number > 0"],
        ),
        (HEAD + STORES + "[evaluation]\nlfw_every_round = 1\n", ["true or false"]),
        ('seed = 1\nrounds = 0\nstrategies = ["fedavg"]\n' + STORES, ["rounds = 0", ">= 1"]),
        ('seed = -1\nrounds = 2\nstrategies = ["fedavg"]\n' + STORES, ["seed = -1", ">= 0"]),
        (HEAD + STORES + "[members]\nenrol_images = 5\n", ["members.enrol_images = 5", "1 to 4"]),
        (HEAD + STORES + "[members]\nyale_members = 37\n", ["yale_members = 37", "0 to 36"]),
        (HEAD + STORES + "[members]\ndirichlet_alpha = 0\n", ["dirichlet_alpha = 0", "> 0"]),
        (HEAD + STORES + '[members]\nsizes = "skewed"\n', ['sizes = "skewed"', '"dirichlet"']),
        (HEAD + STORES + "[training]\nmargin = 1.0\n", ["training.margin = 1.0", "[0, 1)"]),
        (HEAD + STORES + "[training]\nmin_members = 1\n", ["training.min_members = 1", ">= 2"]),
        (HEAD + STORES + "[privacy]\ndelta = 1.5\n", ["privacy.delta = 1.5", "(0, 1)"]),
        (HEAD + STORES + "[privacy]\nclipping_norm = 0\n", ["privacy.clipping_norm = 0"]),
        (HEAD + STORES + "[evaluation]\nlfw_folds = 11\n", ["lfw_folds = 11", "1 to 10"]),
        (HEAD + STORES + "[evaluation]\nfpir = nan\n", ["evaluation.fpir", "finite"]),
        (HEAD + STORES + "[evaluation]\nheldout_images = 1\n", ["heldout_images = 1", ">= 2"]),
        (HEAD + "proximal_mu = -0.1\n" + STORES, ["proximal_mu = -0.1", ">= 0"]),
        (HEAD + "members = 3\n" + STORES, ["members = 3", "table"]),
        (HEAD + '[[stores]]\ncondition = "foggy"\n', ['stores[0].condition = "foggy"', "yale"]),
        (HEAD + '[[stores]]\ncondition = "clean"\ncount = 0\n', ["stores[0].count = 0"]),
        (HEAD + "[[stores]]\ncount = 2\n", ["stores[0].condition is missing"]),
        (
            'seed = 1\nrounds = 2\nstrategies = ["fedavg", "none", "fedavg"]\n' + STORES,
            ['"fedavg" twice'],
        ),
        ('seed = 1\nrounds = 2\nstrategies = ["fedsgd"]\n' + STORES, ['"fedsgd"', "fedprox"]),
        ("seed = 1\nrounds = 2\nstrategies = []\n" + STORES, ["strategies = []"]),
        ('seed = 1\nstrategies = ["fedavg"]\n' + STORES, ["rounds is missing"]),
        (HEAD, ["stores is missing"]),
        (
            HEAD + '[[stores]]\ncondition = "yale"\ncount = 3\n[members]\nyale_members = 12\n',
            ["members.yale_members = 12", "3 yale stores", ">= 15"],
        ),
        (
            HEAD + '[[stores]]\ncondition = "low_light"\ncount = 13\n',
            ["members.lfw_members = 60", "13 non-yale stores", ">= 65"],
        ),
    ],
)
def test_mistakes_name_the_file_and_the_key(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ExperimentError) as caught:
        load_experiment(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message


def test_lfw_member_minimum_ignores_yale_only_experiments(tmp_path: Path) -> None:
    # Without non-yale stores lfw_members is unused, so even 0 is fine.
    text = HEAD + '[[stores]]\ncondition = "yale"\ncount = 2\n[members]\nlfw_members = 0\n'
    assert load_experiment(_write(tmp_path, text)).members.lfw_members == 0


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ExperimentError, match=re.escape(str(path))) as caught:
        load_experiment(path)
    assert isinstance(caught.value, LoyalnetError)
    assert "does not exist" in str(caught.value)


def test_invalid_toml(tmp_path: Path) -> None:
    path = _write(tmp_path, "seed = = 1\n")
    with pytest.raises(ExperimentError, match="not valid TOML") as caught:
        load_experiment(path)
    assert str(path) in str(caught.value)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ExperimentError, match=re.escape(str(path))):
        load_experiment(path)
