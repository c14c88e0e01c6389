"""The draw of who is a member of which store, against the real LFW and Extended Yale B lists."""

from __future__ import annotations

import re
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from simulations.experiment import (
    EvaluationSpec,
    Experiment,
    ExperimentError,
    MembersSpec,
    StoreGroup,
    TrainingSpec,
)
from simulations.population import MIN_PHOTOS, Population, SimStore, draw_population
from store_node.datasets.lfw import lfw_people

STORES = (
    StoreGroup("clean", 2),
    StoreGroup("yale", 2),
    StoreGroup("low_light", 1),
    StoreGroup("grayscale", 1),
)


def _experiment(**changes: Any) -> Experiment:
    base = Experiment(
        name="test",
        seed=3,
        rounds=1,
        stores=STORES,
        strategies=("fedavg",),
        members=MembersSpec(lfw_members=42, yale_members=20, strangers_per_store=50),
        training=TrainingSpec(),
        evaluation=EvaluationSpec(heldout_lfw_people=30, heldout_images=5),
    )
    return replace(base, **changes)


@pytest.fixture(scope="module")
def population(shared: Path) -> Population:
    return draw_population(_experiment(), shared)


def _person_of(photo: Path) -> str:
    # Both data sets keep one folder per person.
    return photo.parent.name


def _people(store: SimStore) -> list[str]:
    return [member.person for member in store.members]


def test_draw_uses_no_network_and_prints_nothing(
    shared: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # First in the file, so that it normally also covers importing datasets/flwr_datasets.
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the draw tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    experiment = _experiment(members=replace(MembersSpec(), sizes="dirichlet"))
    population = draw_population(experiment, shared)
    assert len(population.stores) == 6
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_same_experiment_same_population(population: Population, shared: Path) -> None:
    assert draw_population(_experiment(), shared) == population


def test_another_seed_another_draw(population: Population, shared: Path) -> None:
    other = draw_population(_experiment(seed=4), shared)
    assert _people(other.stores[0]) != _people(population.stores[0])
    assert other.heldout != population.heldout
    assert other.trained_people != population.trained_people


def test_stores_follow_the_experiment(population: Population) -> None:
    assert [s.store_id for s in population.stores] == [f"store-0{i}" for i in range(1, 7)]
    assert [s.condition for s in population.stores] == _experiment().store_conditions()
    assert [s.source for s in population.stores] == ["lfw", "lfw", "yale", "yale", "lfw", "lfw"]
    assert population.describe()[2] == {
        "store": "store-03",
        "condition": "yale",
        "source": "yale",
        "members": 10,
        "enrol_photos": 10 * 12,
        "probes": 10 * 4,
        "strangers": 50,
    }


def test_members_are_disjoint_everywhere(population: Population) -> None:
    members = [p for store in population.stores for p in _people(store)]
    assert len(members) == len(set(members)) == 42 + 20
    heldout = {p for held in population.heldout for p in held.people}
    assert not heldout & set(members)
    for store in population.stores:
        prefix = f"{store.source}:"
        strangers = {prefix + _person_of(photo) for photo in store.strangers}
        assert not strangers & set(members)
    lfw_members = {p.removeprefix("lfw:") for p in members if p.startswith("lfw:")}
    assert population.trained_people == lfw_members


def test_photos_are_the_persons_and_enrol_and_probes_are_disjoint(
    population: Population,
) -> None:
    spec = _experiment().members
    for store in population.stores:
        for member in store.members:
            enrol_count = spec.enrol_images if store.source == "lfw" else spec.yale_enrol_images
            assert len(member.enrol) == enrol_count
            assert 1 <= len(member.probes) <= spec.probe_images
            assert not set(member.enrol) & set(member.probes)
            name = member.person.split(":", 1)[1]
            assert {_person_of(p) for p in (*member.enrol, *member.probes)} == {name}


def test_member_ids_are_pseudonymous_and_unique(population: Population) -> None:
    members = [m for store in population.stores for m in store.members]
    ids = [m.member_id for m in members]
    assert all(re.fullmatch(r"m\d{4}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    # Numbered in store order, so they say nothing about who the member is.
    assert ids == [f"m{i:04d}" for i in range(1, len(ids) + 1)]


def test_equal_sizes_differ_by_at_most_one(population: Population) -> None:
    for source, total in (("lfw", 42), ("yale", 20)):
        sizes = [len(s.members) for s in population.stores if s.source == source]
        assert sum(sizes) == total
        assert max(sizes) - min(sizes) <= 1


def test_yale_stores_hold_only_yale_people(population: Population, shared: Path) -> None:
    yale_root = shared / "data" / "croppedyale"
    for store in population.stores:
        is_yale = store.condition == "yale"
        assert all(p.startswith("yale:" if is_yale else "lfw:") for p in _people(store))
        photos = [p for m in store.members for p in (*m.enrol, *m.probes)]
        assert all(p.is_relative_to(yale_root) == is_yale for p in (*photos, *store.strangers))


def test_strangers(population: Population) -> None:
    photos_of = {name: len(photos) for name, photos in lfw_people().items()}
    lfw_stores = [s for s in population.stores if s.source == "lfw"]
    seen: set[str] = set()
    for store in lfw_stores:
        people = [_person_of(p) for p in store.strangers]
        assert len(people) == len(set(people)) == 50
        assert all(photos_of[p] < MIN_PHOTOS for p in people)
        assert not seen & set(people), "enough walk-ins exist for disjoint strangers"
        seen |= set(people)
    yale_heldout = {p.removeprefix("yale:") for p in population.heldout[0].people}
    yale_strangers: set[Path] = set()
    for store in population.stores:
        if store.source == "yale":
            assert len(set(store.strangers)) == 50
            # Round robin: every held-out Yale person walks in.
            assert {_person_of(p) for p in store.strangers} == yale_heldout
            assert not yale_strangers & set(store.strangers), "enough photos to be disjoint"
            yale_strangers |= set(store.strangers)


def test_calibration_people_are_nobody_else(population: Population, shared: Path) -> None:
    people = [_person_of(p) for p in population.calibration]
    assert len(people) == len(set(people)) == EvaluationSpec().calibration_people
    assert all(p.suffix == ".jpg" for p in population.calibration)  # LFW, one photo each
    everyone_else = {_person_of(p) for s in population.stores for p in s.strangers}
    everyone_else |= {m.person.split(":", 1)[1] for s in population.stores for m in s.members}
    everyone_else |= {p.split(":", 1)[1] for h in population.heldout for p in h.people}
    assert not everyone_else & set(people)
    # Taken from the far end of the walk-ins: asking for more moves no store's strangers.
    more = _experiment(evaluation=replace(population_spec(), calibration_people=900))
    again = draw_population(more, shared)
    assert [s.strangers for s in again.stores] == [s.strangers for s in population.stores]
    assert set(population.calibration) < set(again.calibration)
    too_many = _experiment(evaluation=replace(population_spec(), calibration_people=5300))
    with pytest.raises(ExperimentError, match="calibration_people"):
        draw_population(too_many, shared)


def population_spec() -> EvaluationSpec:
    return _experiment().evaluation


def test_heldout_sets(population: Population) -> None:
    assert [h.condition for h in population.heldout] == ["yale", "low_light", "grayscale"]
    yale, low_light, grayscale = population.heldout
    assert low_light.people == grayscale.people
    assert len(low_light.people) == 30
    assert all(p.startswith("lfw:") for p in low_light.people)
    assert all(len(photos) == 5 for photos in low_light.people.values())
    assert len(yale.people) == 38 - 20
    assert all(p.startswith("yale:") for p in yale.people)
    assert all(len(set(photos)) == 5 for photos in yale.people.values())
    yale_strangers = {p for s in population.stores if s.source == "yale" for p in s.strangers}
    assert not yale_strangers & {p for photos in yale.people.values() for p in photos}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dirichlet_sizes_are_skewed_but_never_below_the_minimum(seed: int, shared: Path) -> None:
    members = MembersSpec(lfw_members=60, sizes="dirichlet", dirichlet_alpha=0.3)
    experiment = _experiment(seed=seed, stores=(StoreGroup("clean", 6),), members=members)
    sizes = [len(s.members) for s in draw_population(experiment, shared).stores]
    assert sum(sizes) == 60
    assert min(sizes) >= members.min_store_members
    assert max(sizes) - min(sizes) > 5, sizes


def test_too_few_lfw_people(shared: Path) -> None:
    experiment = _experiment(members=MembersSpec(lfw_members=400))
    with pytest.raises(ExperimentError) as caught:
        draw_population(experiment, shared)
    assert "members.lfw_members (400)" in str(caught.value)
    assert "423" in str(caught.value)


def test_no_yale_stores_needs_no_yale_people(shared: Path) -> None:
    experiment = _experiment(stores=(StoreGroup("clean", 1), StoreGroup("motion_blur", 1)))
    population = draw_population(experiment, shared)
    assert all(s.source == "lfw" for s in population.stores)
    assert [h.condition for h in population.heldout] == ["motion_blur"]
