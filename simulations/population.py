"""Who is who in a simulation: each store's members, their photos, strangers, held-out people.

:func:`draw_population` turns an :class:`~simulations.experiment.Experiment` into a
:class:`Population`, deterministically: the same experiment (and the same data) gives an
identical population, every random choice following ``experiment.seed``. The rules:

- LFW people with at least :data:`MIN_PHOTOS` photos (423) are the candidates. Shuffled, the
  first ``evaluation.heldout_lfw_people`` are held out (never members, used for TAR under each
  synthetic hard condition) and the next ``members.lfw_members`` are the members of the non-yale
  stores. LFW people with fewer photos are the strangers who walk into those stores.
- The 38 Extended Yale B people, shuffled: the first ``members.yale_members`` are members of
  the yale stores (none without yale stores), the others are held out; their photos are the
  yale stores' strangers and the yale condition's TAR set.
- Each member's photos, shuffled: the first ``enrol_images`` (``yale_enrol_images`` for Yale
  members) are enrolled, the next (up to ``probe_images``) are the probes the store must
  recognise.
- Members are spread over their stores by Flower Datasets' partitioners (LFW members over the
  non-yale stores, Yale members over the yale stores): ``IidPartitioner`` for equal sizes,
  ``DirichletPartitioner`` for Dirichlet-skewed ones (see :func:`_spread` for how every store
  still gets ``min_store_members``).

Every random stream is seeded from the experiment's seed and a label of its own (e.g. the
person's name for their photo order), so changing one setting (say ``probe_images``) does not
reshuffle unrelated draws.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from simulations.experiment import LFW_MIN_PHOTOS, Experiment, ExperimentError, MembersSpec
from store_node.datasets.lfw import lfw_people
from store_node.datasets.yale import yale_people

MIN_PHOTOS = LFW_MIN_PHOTOS
"""LFW people with at least this many photos can be members or held-out people."""

LFW = "lfw"
YALE = "yale"

_T = TypeVar("_T")
# A drawn member before it has an id: person key, enrolment photos, probes.
_Drawn = tuple[str, tuple[Path, ...], tuple[Path, ...]]


@dataclass(frozen=True)
class SimMember:
    """One member of one store.

    Attributes:
        member_id: pseudonymous id, unique in the experiment (``m0001``, ``m0002``, ...), the
            only name the store sees.
        person: who it really is, ``lfw:<Name>`` or ``yale:<yaleBNN>``; kept in the
            simulation's record only.
        enrol: the enrolment photos, >= 1.
        probes: photos of the member the store must recognise, disjoint from ``enrol``, >= 1.
    """

    member_id: str
    person: str
    enrol: tuple[Path, ...]
    probes: tuple[Path, ...]


@dataclass(frozen=True)
class SimStore:
    """One simulated store.

    Attributes:
        store_id: ``store-01``, ``store-02``, ... in ``experiment.store_conditions()`` order.
        condition: its camera condition, one of :data:`simulations.experiment.CONDITIONS`.
        source: ``"yale"`` for the yale condition (Extended Yale B people), else ``"lfw"``.
        members: its members, disjoint from every other store's.
        strangers: photos of people enrolled in no store (impostor probes for the open-set
            threshold): one photo each of different LFW people for LFW stores, photos of the
            held-out Yale people for yale stores.
    """

    store_id: str
    condition: str
    source: str
    members: tuple[SimMember, ...]
    strangers: tuple[Path, ...]


@dataclass(frozen=True)
class HeldOutSet:
    """People no store trains on, seen under one hard condition, for TAR at fixed FAR.

    Attributes:
        condition: a hard condition (one of ``experiment.hard_conditions()``); for the
            synthetic ones the camera is applied to these photos later.
        people: person key (``lfw:<Name>`` or ``yale:<yaleBNN>``) -> that person's photos:
            ``evaluation.heldout_images`` of them, or all of an LFW person's photos (at least
            :data:`MIN_PHOTOS`) when they have fewer. The same people and photos for every
            synthetic condition.
    """

    condition: str
    people: dict[str, tuple[Path, ...]]


@dataclass(frozen=True)
class Population:
    """Everything :func:`draw_population` drew.

    Attributes:
        stores: one per store, in ``experiment.store_conditions()`` order.
        heldout: one per hard condition, in ``experiment.hard_conditions()`` order.
        trained_people: plain LFW names of every LFW member, to drop from the LFW View 2 pairs
            so that ``lfw_accuracy`` is measured on people no store trained on.
        calibration: one clean photo each of ``evaluation.calibration_people`` LFW people who
            are no member, no held-out person and no store's stranger: the reference impostor
            scores of each store's operating threshold, as the shipped LFW singles are a real
            store's.
    """

    stores: tuple[SimStore, ...]
    heldout: tuple[HeldOutSet, ...]
    trained_people: frozenset[str]
    calibration: tuple[Path, ...] = ()

    def describe(self) -> list[dict[str, Any]]:
        """Per store, for reports: id, condition, source and counts of members, enrolment
        photos, probes and strangers."""
        return [
            {
                "store": store.store_id,
                "condition": store.condition,
                "source": store.source,
                "members": len(store.members),
                "enrol_photos": sum(len(m.enrol) for m in store.members),
                "probes": sum(len(m.probes) for m in store.members),
                "strangers": len(store.strangers),
            }
            for store in self.stores
        ]


def draw_population(experiment: Experiment, home: Path | None = None) -> Population:
    """Draw the stores' members, strangers and held-out people for ``experiment``.

    Reads the data sets' file lists only (no image is opened) and touches no network.

    Args:
        experiment: a checked experiment.
        home: the data home holding ``data/lfw`` (and ``data/croppedyale`` when the
            experiment has yale stores); by default :func:`loyalnet.assets.data_home`.

    Raises:
        ExperimentError: the data has too few people or photos for the experiment.
        AssetError: a data set is missing.
    """
    where = "experiment" if experiment.source is None else str(experiment.source)
    seed = experiment.seed
    spec = experiment.members
    per_heldout = experiment.evaluation.heldout_images
    conditions = experiment.store_conditions()
    lfw_slots = [i for i, c in enumerate(conditions) if c != YALE]
    yale_slots = [i for i, c in enumerate(conditions) if c == YALE]
    drawn: dict[int, list[_Drawn]] = {}
    strangers: dict[int, tuple[Path, ...]] = {}

    everyone = lfw_people(home)
    candidates = sorted(name for name, photos in everyone.items() if len(photos) >= MIN_PHOTOS)
    candidates = _shuffled(candidates, seed, "lfw-people")
    walk_ins = sorted(name for name, photos in everyone.items() if len(photos) < MIN_PHOTOS)
    walk_ins = _shuffled(walk_ins, seed, "lfw-strangers")
    heldout_count = experiment.evaluation.heldout_lfw_people
    member_count = spec.lfw_members if lfw_slots else 0
    if heldout_count + member_count > len(candidates):
        raise ExperimentError(
            f"{where}: members.lfw_members ({member_count}) + evaluation.heldout_lfw_people "
            f"({heldout_count}) = {member_count + heldout_count} people, but LFW has only "
            f"{len(candidates)} people with >= {MIN_PHOTOS} photos; lower one of them."
        )
    heldout_lfw = candidates[:heldout_count]
    lfw_members = candidates[heldout_count : heldout_count + member_count]
    spread = _spread(len(lfw_members), len(lfw_slots), spec, seed, LFW, where)
    for k, (slot, indices) in enumerate(zip(lfw_slots, spread, strict=True)):
        names = [lfw_members[i] for i in indices]
        drawn[slot] = [
            _draw_member(LFW, name, everyone[name], spec.enrol_images, experiment, where)
            for name in names
        ]
        # One photo per stranger: each is a different person, as walk-ins mostly are.
        strangers[slot] = tuple(
            everyone[name][0] for name in _window(walk_ins, k, spec.strangers_per_store)
        )

    heldout_yale: dict[str, list[Path]] = {}
    if yale_slots:
        yale = yale_people(home)
        yale_names = _shuffled(sorted(yale), seed, "yale-people")
        yale_members = yale_names[: spec.yale_members]
        heldout_yale = {
            name: _shuffled(yale[name], seed, f"photos:{name}")
            for name in yale_names[spec.yale_members :]
        }
        # Yale stores' strangers: the held-out Yale people's photos that are not in the yale
        # TAR set, one person after another in turn, so that every stranger appears evenly.
        spare = [photos[per_heldout:] for photos in heldout_yale.values()]
        pool = [p[r] for r in range(max(map(len, spare), default=0)) for p in spare if r < len(p)]
        if not pool:
            raise ExperimentError(
                f"{where}: evaluation.heldout_images = {per_heldout} takes every photo of the "
                "held-out Yale people, leaving no strangers for the yale stores; lower "
                "evaluation.heldout_images or members.yale_members."
            )
        spread = _spread(len(yale_members), len(yale_slots), spec, seed, YALE, where)
        for k, (slot, indices) in enumerate(zip(yale_slots, spread, strict=True)):
            names = [yale_members[i] for i in indices]
            drawn[slot] = [
                _draw_member(YALE, name, yale[name], spec.yale_enrol_images, experiment, where)
                for name in names
            ]
            strangers[slot] = tuple(_window(pool, k, spec.strangers_per_store))

    stores: list[SimStore] = []
    for slot, condition in enumerate(conditions):
        # Ids count up over the stores in order: pseudonymous, and unique in the experiment.
        first = sum(len(drawn[s]) for s in range(slot)) + 1
        members = tuple(
            SimMember(f"m{first + i:04d}", person, enrol, probes)
            for i, (person, enrol, probes) in enumerate(drawn[slot])
        )
        stores.append(
            SimStore(
                store_id=f"store-{slot + 1:02d}",
                condition=condition,
                source=YALE if condition == YALE else LFW,
                members=members,
                strangers=strangers[slot],
            )
        )

    heldout: list[HeldOutSet] = []
    for condition in experiment.hard_conditions():
        if condition == YALE:
            people = {f"{YALE}:{n}": tuple(p[:per_heldout]) for n, p in heldout_yale.items()}
        else:
            # The same people and photos under every synthetic condition: the conditions then
            # differ only by the camera, which is applied later.
            people = {
                f"{LFW}:{name}": tuple(
                    _shuffled(everyone[name], seed, f"photos:{name}")[:per_heldout]
                )
                for name in heldout_lfw
            }
        heldout.append(HeldOutSet(condition=condition, people=people))

    # Calibration people come from the far end of the walk-ins, so adding them moves no
    # store's strangers.
    calibration_count = experiment.evaluation.calibration_people
    strangers_used = len(lfw_slots) * spec.strangers_per_store
    if strangers_used + calibration_count > len(walk_ins):
        raise ExperimentError(
            f"{where}: {strangers_used} LFW strangers and evaluation.calibration_people "
            f"({calibration_count}) need {strangers_used + calibration_count} LFW people with "
            f"fewer than {MIN_PHOTOS} photos, but there are {len(walk_ins)}; lower one of them."
        )
    calibration = tuple(everyone[name][0] for name in walk_ins[len(walk_ins) - calibration_count :])
    return Population(
        stores=tuple(stores),
        heldout=tuple(heldout),
        trained_people=frozenset(lfw_members),
        calibration=calibration,
    )


def _draw_member(
    source: str,
    name: str,
    photos: Sequence[Path],
    enrol_count: int,
    experiment: Experiment,
    where: str,
) -> _Drawn:
    """A member's person key, enrolment photos and probes, from their shuffled photos."""
    order = _shuffled(photos, experiment.seed, f"photos:{name}")
    enrol = tuple(order[:enrol_count])
    probes = tuple(order[enrol_count : enrol_count + experiment.members.probe_images])
    if not probes:
        key = "enrol_images" if source == LFW else "yale_enrol_images"
        raise ExperimentError(
            f"{where}: members.{key} = {enrol_count} leaves no probe photo for {source} member "
            f"{name}, who has {len(photos)} photos; lower members.{key} to at most "
            f"{len(photos) - 1}."
        )
    return f"{source}:{name}", enrol, probes


def _spread(
    count: int, stores: int, spec: MembersSpec, seed: int, label: str, where: str
) -> list[list[int]]:
    """Members ``0..count-1`` spread over ``stores`` stores by a Flower Datasets partitioner.

    ``sizes = "equal"``: ``IidPartitioner``, contiguous shards of the (already shuffled)
    members, sizes differing by at most one.

    ``sizes = "dirichlet"``: ``DirichletPartitioner`` over a single label (``cohort``), so its
    per-label Dirichlet(alpha) proportions become the stores' shares of the members. It is run
    without a minimum size and stores under ``min_store_members`` are then topped up with
    members taken one at a time from the largest store: the partitioner's own minimum redraws
    the whole split and gives up after 11 draws, which fails for most seeds at the defaults
    (60 members over 6 stores, at least 5 each: about 60% of seeds at alpha 1, 90% at 0.5).
    """
    if stores == 0:
        return []
    floor = spec.min_store_members
    if count < floor * stores:
        raise ExperimentError(
            f"{where}: {count} {label} members cannot give {stores} stores "
            f"members.min_store_members = {floor} each; add members or lower the minimum."
        )
    # Imported here: datasets and flwr_datasets take seconds to import and only the draw
    # needs them. Dataset.from_dict builds an in-memory table, so nothing is downloaded or
    # cached, and none of the operations used shows a progress bar.
    from datasets import Dataset  # type: ignore[import-untyped]
    from flwr_datasets.partitioner import (  # type: ignore[import-untyped]
        DirichletPartitioner,
        IidPartitioner,
    )

    table = Dataset.from_dict({"member": list(range(count)), "cohort": [0] * count})
    if spec.sizes == "equal":
        partitioner = IidPartitioner(num_partitions=stores)
    else:
        partitioner = DirichletPartitioner(
            num_partitions=stores,
            partition_by="cohort",
            alpha=spec.dirichlet_alpha,
            min_partition_size=0,
            self_balancing=False,
            seed=random.Random(f"{seed}:{label}-sizes").getrandbits(32),
        )
    partitioner.dataset = table
    try:
        parts = [[int(i) for i in partitioner.load_partition(s)["member"]] for s in range(stores)]
    except ValueError as error:
        raise ExperimentError(
            f"{where}: cannot spread {count} {label} members over {stores} stores ({error}); "
            "raise members.dirichlet_alpha or add members."
        ) from None
    _top_up(parts, floor)
    return parts


def _top_up(parts: list[list[int]], floor: int) -> None:
    """Move members from the largest store to any store under ``floor``, one at a time.

    Needs at least ``floor * len(parts)`` members in all. Ties go to the earlier store.
    """
    while True:
        small = min(range(len(parts)), key=lambda s: (len(parts[s]), s))
        if len(parts[small]) >= floor:
            return
        large = max(range(len(parts)), key=lambda s: (len(parts[s]), -s))
        parts[small].append(parts[large].pop())


def _window(items: Sequence[_T], k: int, size: int) -> list[_T]:
    """The ``k``-th run of ``size`` items (at most ``len(items)``), wrapping around: disjoint
    from the other runs as long as there are enough items."""
    size = min(size, len(items))
    return [items[(k * size + j) % len(items)] for j in range(size)]


def _shuffled(items: Sequence[_T], seed: int, label: str) -> list[_T]:
    """A copy of ``items`` in a random order fixed by ``seed`` and ``label``."""
    # random.Random hashes a string seed with SHA-512: stable across runs and processes
    # (unlike hash()), and each label gets a stream of its own.
    order = list(items)
    random.Random(f"{seed}:{label}").shuffle(order)
    return order
