"""An experiment file for ``loyalnet sim run``: which stores, which people, which strategies.

An experiment simulates many stores, each with its own camera condition and its own disjoint
members, fine-tuning the face embedder together, and compares training strategies on the same
draw of people. It is a TOML file; every table is optional and every key in a table has a
default, but ``seed``, ``rounds``, ``strategies`` and at least one ``[[stores]]`` group are
required. A complete example, with every key at its default where it has one:

```toml
name = "cameras-vs-yale"      # default: the file's name without .toml
seed = 7                      # whole number >= 0; the whole draw and every run follow from it
rounds = 10                   # federated rounds, >= 1
strategies = ["none", "local-only", "fedavg", "fedprox", "fedavg-dp", "centralized"]
proximal_mu = 0.01            # FedProx mu, >= 0
update_encoding = "float32"   # or "float16-delta": stores send their change in float16
fraction_train = 1.0          # share of the stores asked each federated round, in (0, 1]
release_mix = 1.0             # share of a federated run's change its released model keeps, (0, 1]

[[stores]]
condition = "clean"           # clean, low_light, motion_blur, low_resolution, grayscale, yale
count = 2                     # stores with this camera, >= 1 (default 1)

[[stores]]
condition = "low_light"
count = 1

[[stores]]
condition = "yale"            # Extended Yale B people under their real, harsh lighting
count = 2

[members]
lfw_members = 60              # LFW people spread over the non-yale stores
yale_members = 26             # Yale people spread over the yale stores, 0..36
enrol_images = 4              # enrolment photos per LFW member, 1..4
yale_enrol_images = 12        # enrolment photos per Yale member, >= 1
probe_images = 4              # held-out photos per member (fewer if the person has fewer), >= 1
sizes = "equal"               # "equal" or "dirichlet" (members per store)
dirichlet_alpha = 1.0         # > 0; smaller = more skewed store sizes
min_store_members = 5         # every store gets at least this many members, >= 1
strangers_per_store = 100     # stranger photos each store sees, >= 1

[training]                    # local training on each store, as the stores' run config
local_epochs = 1              # >= 1
learning_rate = 0.001         # SGD step size, > 0
batch_size = 32               # crops per SGD step, >= 2
weight_decay = 0.0005         # L2 penalty on the backbone, >= 0
margin = 0.35                 # CosFace margin, in [0, 1)
scale = 30.0                  # CosFace scale, > 0
min_members = 5               # a store with fewer consenting members declines a round, >= 2
frozen_layers = 0             # MobileFaceNet's first layers kept at the global weights, 0-21

[privacy]                     # the "fedavg-dp" strategy
noise_multiplier = 1.0        # sigma, > 0
clipping_norm = 0.05          # L2 norm each store's update is clipped to, > 0
delta = 1e-5                  # the delta epsilon is reported at, in (0, 1)

[evaluation]
heldout_lfw_people = 40       # LFW people no store trains on, for TAR, >= 2
heldout_images = 6            # photos per held-out person per condition, >= 2
lfw_folds = 10                # LFW View 2 folds for lfw_accuracy, 1..10
lfw_every_round = false       # false: LFW accuracy at round 0 and the final round only
fpir = 0.01                   # false positive identification rate of the open-set threshold, (0, 1)
calibration_people = 500      # strangers on clean photos behind each store's own threshold, >= 2
```

:func:`load_experiment` reads and checks a file; every mistake (a misspelt key, a value of the
wrong type or out of range, too few people for the stores) is an :class:`ExperimentError` that
names the file and the key and says what would be accepted.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from coordinator.run_config import TRAINING_DEFAULTS
from loyalnet.errors import LoyalnetError
from loyalnet.update_encoding import ENCODINGS, FLOAT32

CONDITIONS = ("clean", "low_light", "motion_blur", "low_resolution", "grayscale", "yale")
"""Store camera conditions: the five of :class:`store_node.cameras.CameraCondition`, applied to
LFW photos, and ``yale``, Extended Yale B people under their real lighting."""

STRATEGIES = ("none", "local-only", "fedavg", "fedprox", "fedavg-dp", "centralized")
"""Strategies an experiment can compare."""

SIZES = ("equal", "dirichlet")
"""How members are spread over stores."""

LFW_MIN_PHOTOS = 5
"""LFW people need at least this many photos to be members or held-out people (423 do)."""

YALE_PEOPLE = 38
"""People in Extended Yale B."""

YALE_MIN_HELDOUT = 2
"""Yale people always kept out of every store, so the yale condition has people for TAR."""

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_Spec = TypeVar("_Spec", bound="DataclassInstance")


class ExperimentError(LoyalnetError):
    """An experiment file is missing, not TOML, or has a key or value that cannot be used."""


@dataclass(frozen=True)
class StoreGroup:
    """``count`` stores that share one camera condition.

    Attributes:
        condition: one of :data:`CONDITIONS`; ``"yale"`` stores enrol Extended Yale B people
            and see them under their real lighting, the others enrol LFW people and see them
            through the named synthetic camera.
        count: stores with this condition, >= 1.
    """

    condition: str
    count: int


@dataclass(frozen=True)
class MembersSpec:
    """Who the stores' members are and how many photos each has.

    Attributes:
        lfw_members: LFW people (with >= 5 photos) spread over the non-yale stores, >= 0 and at
            least ``min_store_members`` per non-yale store; unused without such stores.
        yale_members: Extended Yale B people spread over the yale stores, 0..36 (the other
            Yale people are held out), at least ``min_store_members`` per yale store; unused
            without yale stores.
        enrol_images: enrolment photos per LFW member, 1..4 (the smallest LFW members have 5
            photos and need one left as a probe).
        yale_enrol_images: enrolment photos per Yale member, >= 1 (Yale people have 60 to 65
            photos, at least one must be left as a probe).
        probe_images: held-out photos per member that the store must recognise, >= 1; fewer
            when the person has fewer photos left after enrolment.
        sizes: ``"equal"`` (store sizes differ by at most one member) or ``"dirichlet"``
            (sizes skewed by a Dirichlet draw, as real stores differ).
        dirichlet_alpha: concentration of the Dirichlet draw, > 0; smaller is more skewed
            (0.5: a few large stores and many at the minimum; 10: nearly equal).
        min_store_members: every store gets at least this many members, >= 1.
        strangers_per_store: stranger photos (people enrolled nowhere) each store sees, >= 1.
    """

    lfw_members: int = 60
    yale_members: int = 26
    enrol_images: int = 4
    yale_enrol_images: int = 12
    probe_images: int = 4
    sizes: str = "equal"
    dirichlet_alpha: float = 1.0
    min_store_members: int = 5
    strangers_per_store: int = 100


@dataclass(frozen=True)
class TrainingSpec:
    """Local training settings, sent to every store; defaults are the coordinator's.

    Attributes:
        local_epochs: passes over a store's crops per round, >= 1.
        learning_rate: SGD step size, > 0.
        batch_size: crops per SGD step, >= 2.
        weight_decay: L2 penalty on the backbone's parameters, >= 0.
        margin: CosFace cosine margin, in [0, 1).
        scale: CosFace logit scale, > 0.
        min_members: a store with fewer consenting members declines the round, >= 2.
        frozen_layers: MobileFaceNet's first layers kept at the global weights, 0-21.
    """

    local_epochs: int = 1
    learning_rate: float = 0.001
    batch_size: int = 32
    weight_decay: float = 5e-4
    margin: float = 0.35
    scale: float = 30.0
    min_members: int = 5
    frozen_layers: int = 0

    def run_config(self) -> dict[str, bool | int | float]:
        """The settings in the stores' run config keys: every key of
        :data:`coordinator.run_config.TRAINING_DEFAULTS` but ``seed``, which the caller adds.

        ``freeze-batchnorm`` is not an experiment setting and keeps the coordinator's default.
        """
        ours = {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}
        return {
            key: ours.get(key, default)
            for key, default in TRAINING_DEFAULTS.items()
            if key != "seed"
        }


@dataclass(frozen=True)
class PrivacySpec:
    """Differential privacy of the ``fedavg-dp`` strategy.

    Attributes:
        noise_multiplier: sigma, the Gaussian noise's standard deviation in units of
            ``clipping_norm`` / (stores averaged), > 0.
        clipping_norm: the L2 norm each store's backbone update is clipped to, > 0.
        delta: the delta the spent epsilon is reported at, in (0, 1).
    """

    noise_multiplier: float = 1.0
    clipping_norm: float = 0.05
    delta: float = 1e-5


@dataclass(frozen=True)
class EvaluationSpec:
    """How the models are measured besides each store's own members.

    Attributes:
        heldout_lfw_people: LFW people (with >= 5 photos) that no store trains on, for the
            true accept rate under each synthetic hard condition, >= 2.
        heldout_images: photos per held-out person per hard condition, >= 2 (fewer when a
            person has fewer).
        lfw_folds: LFW View 2 folds used for ``lfw_accuracy``, 1..10.
        lfw_every_round: measure LFW accuracy after every round; False measures it at round 0
            and the final round only (it is the slowest measurement).
        fpir: the false positive identification rate (fraction of stranger photos matched to
            a member) that fixes each store's open-set threshold, in (0, 1); also the target
            of each store's own operating threshold (``store_node.threshold``).
        calibration_people: LFW people seen by no store, one clean photo each, whose impostor
            scores are the reference part of each store's operating threshold, >= 2.
    """

    heldout_lfw_people: int = 40
    heldout_images: int = 6
    lfw_folds: int = 10
    lfw_every_round: bool = False
    fpir: float = 0.01
    calibration_people: int = 500


@dataclass(frozen=True)
class Experiment:
    """A checked experiment; see the module docstring for the file it comes from.

    Attributes:
        name: a label for reports.
        seed: whole number >= 0; the draw of people and every strategy's randomness follow it.
        rounds: federated rounds, >= 1.
        stores: the store groups, >= 1, in file order.
        strategies: the strategies to compare, a subset of :data:`STRATEGIES` without
            repeats, in file order.
        members: who the members are.
        training: local training settings.
        proximal_mu: FedProx's mu for the ``fedprox`` strategy, >= 0.
        update_encoding: how the federated strategies' stores send their update
            (``loyalnet.update_encoding``): "float32" or "float16-delta".
        fraction_train: the share of stores Flower samples for each federated round, (0, 1].
        release_mix: how far a federated strategy's released model moves from the starting
            model towards its last round's (``coordinator.release_mix``), (0, 1]; the last
            round is scored on the released model.
        privacy: DP settings for the ``fedavg-dp`` strategy.
        evaluation: how models are measured.
        source: the file it was read from, None when built from a mapping.
    """

    name: str
    seed: int
    rounds: int
    stores: tuple[StoreGroup, ...]
    strategies: tuple[str, ...]
    members: MembersSpec
    training: TrainingSpec
    proximal_mu: float = 0.01
    update_encoding: str = "float32"
    fraction_train: float = 1.0
    release_mix: float = 1.0
    privacy: PrivacySpec = field(default_factory=PrivacySpec)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    source: Path | None = None

    def store_conditions(self) -> list[str]:
        """One condition per store, the groups expanded in file order."""
        return [group.condition for group in self.stores for _ in range(group.count)]

    def hard_conditions(self) -> list[str]:
        """The distinct conditions other than ``clean``, in order of first appearance."""
        return list(dict.fromkeys(c for c in self.store_conditions() if c != "clean"))

    def store_training(self) -> dict[str, bool | int | float]:
        """The training settings every store gets, as the coordinator sends them: the
        ``[training]`` table in run config keys, with the experiment's seed."""
        return {**self.training.run_config(), "seed": self.seed}

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able record of every setting, laid out like the file.

        Without ``source`` it reads back with :func:`experiment_from_dict` to an equal
        experiment (with no source).
        """
        return {
            "name": self.name,
            "seed": self.seed,
            "rounds": self.rounds,
            "strategies": list(self.strategies),
            "proximal_mu": self.proximal_mu,
            "update_encoding": self.update_encoding,
            "fraction_train": self.fraction_train,
            "release_mix": self.release_mix,
            "stores": [asdict(group) for group in self.stores],
            "members": asdict(self.members),
            "training": asdict(self.training),
            "privacy": asdict(self.privacy),
            "evaluation": asdict(self.evaluation),
            "source": None if self.source is None else str(self.source),
        }


def load_experiment(path: Path) -> Experiment:
    """Read and check an experiment file.

    Raises:
        ExperimentError: the file is missing or unreadable, is not valid TOML, or a key or
            value is wrong (the message names the file and the key).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExperimentError(
            f"experiment file {path} does not exist; check the path (a .toml file, see "
            "simulations/experiment.py for an example)."
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ExperimentError(
            f"cannot read the experiment file {path} ({error}); make it a readable UTF-8 TOML file."
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ExperimentError(
            f"{path} is not valid TOML ({error}); fix the file's syntax."
        ) from None
    return experiment_from_dict(data, source=Path(path))


_TOP_KEYS = (
    "name",
    "seed",
    "rounds",
    "strategies",
    "proximal_mu",
    "update_encoding",
    "fraction_train",
    "release_mix",
    "stores",
    "members",
    "training",
    "privacy",
    "evaluation",
)
_GROUP_KEYS = ("condition", "count")


def experiment_from_dict(data: Mapping[str, Any], source: Path | None = None) -> Experiment:
    """Check a parsed experiment file (a TOML document as a mapping) and build the experiment.

    ``source`` is the file it came from: it names the file in messages and gives ``name`` its
    default, the file's stem. Without it, ``name`` is required.

    Raises:
        ExperimentError: an unknown key, a missing required key, or a value of the wrong type
            or out of range.
    """
    check = _Checker("experiment (not from a file)" if source is None else str(source))
    check.known_keys(data, "", _TOP_KEYS)

    if "name" in data:
        name = check.text(data["name"], "name")
    elif source is not None:
        name = source.stem
    else:
        raise check.error('name is missing; add e.g. name = "my-experiment".')
    seed = check.whole(check.required(data, "seed", "add e.g. seed = 0"), "seed", low=0)
    rounds = check.whole(check.required(data, "rounds", "add e.g. rounds = 10"), "rounds", low=1)
    strategies = _strategies(
        check, check.required(data, "strategies", 'add e.g. strategies = ["none", "fedavg"]')
    )
    proximal_mu = check.number(data.get("proximal_mu", 0.01), "proximal_mu", low=0.0)
    update_encoding = check.text(data.get("update_encoding", FLOAT32), "update_encoding")
    share = _Range(0, 1, low_open=True)
    fraction_train = check.ranged_number(data.get("fraction_train", 1.0), "fraction_train", share)
    release_mix = check.ranged_number(data.get("release_mix", 1.0), "release_mix", share)
    if update_encoding not in ENCODINGS:
        raise check.error(
            f"update_encoding = {_show(update_encoding)} is unknown; use one of "
            f"{', '.join(_show(e) for e in ENCODINGS)}."
        )
    stores = _store_groups(
        check,
        check.required(
            data, "stores", "add a [[stores]] table with condition and count per group of stores"
        ),
    )
    members = _section(check, data, "members", MembersSpec, _MEMBER_RULES)
    training = _section(check, data, "training", TrainingSpec, _TRAINING_RULES)
    privacy = _section(check, data, "privacy", PrivacySpec, _PRIVACY_RULES)
    evaluation = _section(check, data, "evaluation", EvaluationSpec, _EVALUATION_RULES)
    if members.sizes not in SIZES:
        raise check.error(
            f"members.sizes = {_show(members.sizes)} is unknown; use one of "
            f"{', '.join(_show(s) for s in SIZES)}."
        )
    _check_member_counts(check, stores, members)
    return Experiment(
        name=name,
        seed=seed,
        rounds=rounds,
        stores=stores,
        strategies=strategies,
        members=members,
        training=training,
        proximal_mu=proximal_mu,
        update_encoding=update_encoding,
        fraction_train=fraction_train,
        release_mix=release_mix,
        privacy=privacy,
        evaluation=evaluation,
        source=source,
    )


@dataclass(frozen=True)
class _Range:
    """Allowed values of a number: ``low``/``high`` bounds, each inclusive unless ``open``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def text(self) -> str:
        low, high = _plain(self.low), _plain(self.high)
        if self.low is not None and self.high is not None:
            if not self.low_open and not self.high_open:
                return f"from {low} to {high}"
            left = "(" if self.low_open else "["
            right = ")" if self.high_open else "]"
            return f"in {left}{low}, {high}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {high}"
        return "any value"


_MEMBER_RULES: dict[str, _Range] = {
    "lfw_members": _Range(0),
    "yale_members": _Range(0, YALE_PEOPLE - YALE_MIN_HELDOUT),
    "enrol_images": _Range(1, LFW_MIN_PHOTOS - 1),
    "yale_enrol_images": _Range(1),
    "probe_images": _Range(1),
    "dirichlet_alpha": _Range(0, low_open=True),
    "min_store_members": _Range(1),
    "strangers_per_store": _Range(1),
}
# Mirrors store_node.training.local.TrainingConfig's checks, so a bad value fails here, before
# any store has started, rather than in every store's first round.
_TRAINING_RULES: dict[str, _Range] = {
    "local_epochs": _Range(1),
    "learning_rate": _Range(0, low_open=True),
    "batch_size": _Range(2),
    "weight_decay": _Range(0),
    "margin": _Range(0, 1, high_open=True),
    "scale": _Range(0, low_open=True),
    "min_members": _Range(2),
    "frozen_layers": _Range(0, 21),
}
_PRIVACY_RULES: dict[str, _Range] = {
    "noise_multiplier": _Range(0, low_open=True),
    "clipping_norm": _Range(0, low_open=True),
    "delta": _Range(0, 1, low_open=True, high_open=True),
}
_EVALUATION_RULES: dict[str, _Range] = {
    # TAR needs impostor pairs, so at least two people.
    "heldout_lfw_people": _Range(2),
    "heldout_images": _Range(2),
    "lfw_folds": _Range(1, 10),
    "fpir": _Range(0, 1, low_open=True, high_open=True),
    "calibration_people": _Range(2),
}


class _Checker:
    """Reads values out of the parsed file; every failure names ``where`` (the file)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def error(self, problem: str) -> ExperimentError:
        return ExperimentError(f"{self.where}: {problem}")

    def known_keys(
        self, table: Mapping[str, Any], prefix: str, allowed: Sequence[str], place: str = ""
    ) -> None:
        unknown = [key for key in table if key not in allowed]
        if unknown:
            where = place or (f"in [{prefix.rstrip('.')}]" if prefix else "at the top level")
            raise self.error(
                f"unknown key {prefix}{unknown[0]} (a typo?); the keys allowed {where} are "
                f"{', '.join(allowed)}."
            )

    def required(self, table: Mapping[str, Any], key: str, hint: str, prefix: str = "") -> Any:
        if key not in table:
            raise self.error(f"{prefix}{key} is missing; {hint}.")
        return table[key]

    def text(self, value: object, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"{key} = {_show(value)} should be a non-empty string in quotes.")
        return value

    def whole(
        self, value: object, key: str, low: int | None = None, high: int | None = None
    ) -> int:
        return self.ranged_whole(value, key, _Range(low, high))

    def ranged_whole(self, value: object, key: str, allowed: _Range) -> int:
        # bool is an int in Python; true is never a count here.
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(
                f"{key} = {_show(value)} should be a whole number {allowed.text()} "
                "(without quotes or a decimal point)."
            )
        if not allowed.holds(value):
            raise self.error(f"{key} = {value} should be a whole number {allowed.text()}.")
        return value

    def number(self, value: object, key: str, low: float | None = None) -> float:
        return self.ranged_number(value, key, _Range(low))

    def ranged_number(self, value: object, key: str, allowed: _Range) -> float:
        # TOML reads 1 as an integer and 1.0 as a float; both are the same setting.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(
                f"{key} = {_show(value)} should be a number {allowed.text()} (without quotes)."
            )
        number = float(value)
        if not math.isfinite(number) or not allowed.holds(number):
            raise self.error(f"{key} = {_show(value)} should be a finite number {allowed.text()}.")
        return number

    def flag(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(f"{key} = {_show(value)} should be true or false (without quotes).")
        return value


def _section(
    check: _Checker,
    data: Mapping[str, Any],
    table: str,
    spec: type[_Spec],
    rules: Mapping[str, _Range],
) -> _Spec:
    """The ``[table]`` of the file as a ``spec`` dataclass; each value typed like its default."""
    raw = data.get(table, {})
    if not isinstance(raw, Mapping):
        raise check.error(
            f"{table} = {_show(raw)} should be a table; write it as [{table}] with its keys "
            "below it."
        )
    defaults = spec()
    names = [f.name for f in fields(defaults)]
    check.known_keys(raw, f"{table}.", names)
    values: dict[str, object] = {}
    for name in names:
        if name not in raw:
            continue
        key, value, default = f"{table}.{name}", raw[name], getattr(defaults, name)
        allowed = rules.get(name, _Range())
        if isinstance(default, bool):
            values[name] = check.flag(value, key)
        elif isinstance(default, int):
            values[name] = check.ranged_whole(value, key, allowed)
        elif isinstance(default, float):
            values[name] = check.ranged_number(value, key, allowed)
        else:
            values[name] = check.text(value, key)
    return spec(**values)


def _strategies(check: _Checker, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise check.error(
            f"strategies = {_show(value)} should be a non-empty list of names from "
            f'{", ".join(STRATEGIES)}, e.g. strategies = ["none", "fedavg"].'
        )
    for index, name in enumerate(value):
        if name not in STRATEGIES:
            raise check.error(
                f"strategies[{index}] = {_show(name)} is unknown; use names from "
                f"{', '.join(STRATEGIES)}."
            )
        if name in value[:index]:
            raise check.error(f"strategies lists {_show(name)} twice; list each strategy once.")
    return tuple(value)


def _store_groups(check: _Checker, value: object) -> tuple[StoreGroup, ...]:
    if not isinstance(value, list) or not value:
        raise check.error(
            "stores should be one or more [[stores]] tables, each with a condition "
            f"({', '.join(CONDITIONS)}) and a count."
        )
    groups = []
    for index, raw in enumerate(value):
        where = f"stores[{index}]"
        if not isinstance(raw, Mapping):
            raise check.error(
                f"{where} = {_show(raw)} should be a table; write each group as [[stores]] "
                "with condition and count below it."
            )
        check.known_keys(raw, f"{where}.", _GROUP_KEYS, place="in a [[stores]] table")
        condition = check.required(
            raw, "condition", f"add one of {', '.join(CONDITIONS)}", prefix=f"{where}."
        )
        if condition not in CONDITIONS:
            raise check.error(
                f"{where}.condition = {_show(condition)} is unknown; use one of "
                f"{', '.join(CONDITIONS)}."
            )
        count = check.whole(raw.get("count", 1), f"{where}.count", low=1)
        groups.append(StoreGroup(condition=condition, count=count))
    return tuple(groups)


def _check_member_counts(
    check: _Checker, stores: tuple[StoreGroup, ...], members: MembersSpec
) -> None:
    """Enough members of each source for its stores to get ``min_store_members`` each."""
    yale_stores = sum(g.count for g in stores if g.condition == "yale")
    lfw_stores = sum(g.count for g in stores if g.condition != "yale")
    floor = members.min_store_members
    for key, have, stores_of_kind, kind in (
        ("lfw_members", members.lfw_members, lfw_stores, "non-yale"),
        ("yale_members", members.yale_members, yale_stores, "yale"),
    ):
        if stores_of_kind and have < floor * stores_of_kind:
            raise check.error(
                f"members.{key} = {have} is too few for {stores_of_kind} {kind} stores of at "
                f"least members.min_store_members = {floor} each; raise members.{key} to "
                f">= {floor * stores_of_kind}, or lower members.min_store_members or the store "
                "count."
            )


def _show(value: object) -> str:
    """A value as it would be written in TOML (true, "text", 1.5), for messages."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _plain(value: float | None) -> str:
    """A bound without a needless ``.0`` (``>= 1`` rather than ``>= 1.0``)."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(value)
