"""The simulation's smaller parts, each against numbers worked out by hand on tiny inputs.

- :func:`simulations.evaluation.score_model` with a fake model: a crop's pixel [0, 0, 0] names
  a unit vector in a table, mostly ``(cos a, sin a, 0, ...)`` for an angle ``a`` in degrees, so
  every cosine similarity is ``cos`` of an angle difference and the right answers can be read
  off a circle.
- :mod:`simulations.photos`: cameras and the aligned-crop cache, on real LFW photos.
- :func:`store_node.trainer.round.round_training_config`: the per-round seed.
- :class:`coordinator.strategy.StoreRounds`: averaging that does not depend on arrival order.
- :mod:`simulations.results`: the results file and its summary numbers.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from numpy.typing import NDArray
from PIL import Image

from coordinator.strategy import (
    WEIGHT_KEY,
    StoreRounds,
    _arrival_free_order,
    aggregate_round_metrics,
)
from simulations.evaluation import (
    NO_FACE,
    EvaluationSet,
    LfwPairs,
    StoreTestSet,
    VerificationSet,
    score_model,
)
from simulations.photos import PhotoBook, Shot, camera_image
from simulations.results import (
    RoundResult,
    SimulationResults,
    StoreMetrics,
    StrategyResult,
)
from store_node.bench.verification import kfold_accuracy, tar_at_far
from store_node.face import FacePipeline, load_image
from store_node.trainer.round import round_training_config

DIM = 128

# --- helpers -------------------------------------------------------------------------------


def unit(degrees: float) -> NDArray[np.float32]:
    """The 128-d unit vector at ``degrees`` in the plane of the first two axes."""
    vector = np.zeros(DIM, dtype=np.float32)
    vector[0] = math.cos(math.radians(degrees))
    vector[1] = math.sin(math.radians(degrees))
    return vector


def cosd(degrees: float) -> float:
    return math.cos(math.radians(degrees))


class FakeModel:
    """An embedding function: crop[0, 0, 0] is an id, its embedding ``table[id]``."""

    def __init__(self) -> None:
        self.table: list[NDArray[np.float32]] = []
        self.asked: list[int] = []

    def add(self, vector: NDArray[np.float32]) -> int:
        """Put ``vector`` in the table; its id (the crop index when ids are indices)."""
        self.table.append(vector)
        assert len(self.table) <= 256, "ids must fit a uint8 pixel"
        return len(self.table) - 1

    def crops(self, ids: Sequence[int]) -> NDArray[np.uint8]:
        """Tiny stand-in crops carrying ``ids`` in pixel [0, 0, 0] (the rest is noise)."""
        crops = np.random.default_rng(len(ids)).integers(0, 256, (len(ids), 2, 2, 3), np.uint8)
        crops[:, 0, 0, 0] = np.asarray(ids, dtype=np.uint8)
        return crops

    def __call__(self, crops: NDArray[np.uint8]) -> NDArray[np.float32]:
        ids = [int(i) for i in crops[:, 0, 0, 0]]
        self.asked.extend(ids)
        return np.stack([self.table[i] for i in ids]).astype(np.float32)


def ints(values: Sequence[int]) -> NDArray[np.int64]:
    return np.asarray(values, dtype=np.int64)


@dataclasses.dataclass
class Scene:
    """A hand-built evaluation set, its fake model and the crop ids of interest."""

    model: FakeModel
    evaluation: EvaluationSet
    only_a: list[int]
    lfw_ids: list[int]
    random_condition: VerificationSet


# LFW pairs: (cosine, same, fold). Worked out by hand in test_lfw_accuracy_is_ten_fold_...
LFW_DESIGN = [
    (0.90, True, 0),
    (0.80, True, 0),
    (0.25, False, 0),
    (0.85, False, 0),
    (0.95, True, 1),
    (0.40, True, 1),
    (0.10, False, 1),
    (0.20, False, 1),
]


def build_scene(fpir: float = 0.2, folds: Sequence[int] | None = None, lfw: bool = True) -> Scene:
    """Two stores, three held-out conditions and eight LFW pairs; see the tests for the maths.

    Gallery of both stores: member 0 at 0 and 90 degrees, member 1 at 40, member 2 at 200.
    Store B's member-0 template at 0 degrees is the *last* crop, so a NO_FACE (-1) index used
    as an array index would silently read it and score 1.0.
    """
    model = FakeModel()

    # Store A: rank-1 only; no strangers (so its threshold is -inf).
    a_gallery = [model.add(unit(d)) for d in (0, 90, 40, 200)]
    a_probe_angles = {0: 80, 1: 25, 2: 190, 4: 45}  # probe position -> angle; 3 is NO_FACE
    a_probes = [model.add(unit(a_probe_angles[i])) if i != 3 else NO_FACE for i in range(5)]
    store_a = StoreTestSet(
        store_id="A",
        gallery=ints(a_gallery),
        gallery_labels=ints([0, 0, 1, 2]),
        probes=ints(a_probes),
        probe_labels=ints([0, 0, 2, 1, 1]),
        strangers=ints([]),
    )

    # Held-out conditions.
    small = [model.add(unit(d)) for d in (0, 10, 30, 100)]
    tiny = [model.add(unit(d)) for d in (0, 50, 5)]
    generator = np.random.default_rng(3)
    many = []
    for _ in range(40):
        vector = generator.normal(size=DIM).astype(np.float32)
        many.append(model.add((vector / np.linalg.norm(vector)).astype(np.float32)))
    heldout = (
        VerificationSet("low_light", ints(small), ints([0, 0, 1, 1])),
        VerificationSet("grayscale", ints(tiny), ints([0, 1, 0])),
        VerificationSet("motion_blur", ints(many), ints([i // 2 for i in range(40)])),
    )

    # Store B: strangers with best scores cos10, cos20, cos30, cos60 and one without a face.
    b_strangers = [model.add(unit(d)) for d in (210, 220, 230, 260)] + [NO_FACE]
    b_probe_angles = [205, 220, 235, 25, None, 2, 215]
    b_probes = [NO_FACE if d is None else model.add(unit(d)) for d in b_probe_angles]
    b_gallery = [model.add(unit(d)) for d in (90, 40, 200)]
    b_gallery = [model.add(unit(0)), *b_gallery]  # member 0's first template: the last crop
    store_b = StoreTestSet(
        store_id="B",
        gallery=ints(b_gallery),
        gallery_labels=ints([0, 0, 1, 2]),
        probes=ints(b_probes),
        probe_labels=ints([2, 2, 2, 0, 1, 0, 2]),
        strangers=ints(b_strangers),
    )
    crops = model.crops(range(len(model.table)))
    assert b_gallery[0] == crops.shape[0] - 1

    # LFW: pair i is left at 17*i degrees, right that plus arccos(cosine).
    lefts = [model.add(unit(17 * i)) for i in range(len(LFW_DESIGN))]
    rights = [
        model.add(unit(17 * i + math.degrees(math.acos(s))))
        for i, (s, _, _) in enumerate(LFW_DESIGN)
    ]
    lfw_ids = lefts + rights
    n = len(LFW_DESIGN)
    pairs = LfwPairs(
        left=ints(range(n)),
        right=ints(range(n, 2 * n)),
        same=np.asarray([same for _, same, _ in LFW_DESIGN], dtype=np.bool_),
        folds=ints(folds if folds is not None else [fold for _, _, fold in LFW_DESIGN]),
    )
    if not lfw:
        pairs = LfwPairs(ints([]), ints([]), np.zeros(0, np.bool_), ints([]))
    evaluation = EvaluationSet(
        crops=crops,
        stores=(store_a, store_b),
        heldout=heldout,
        lfw_crops=model.crops(lfw_ids),
        lfw=pairs,
        fpir=fpir,
    )
    only_a = [*a_gallery, *(p for p in a_probes if p != NO_FACE)]
    return Scene(model, evaluation, only_a, lfw_ids, heldout[2])


def reply(
    node: int,
    values: Sequence[float],
    examples: int,
    members: int = 5,
    losses: tuple[float, float] = (1.0, 0.5),
) -> Message:
    """A store's training reply: one float32 array ``w`` and the metrics the sort looks at."""
    metrics = MetricRecord(
        {
            WEIGHT_KEY: examples,
            "members": members,
            "declined": 0,
            "loss-first-epoch": losses[0],
            "loss-last-epoch": losses[1],
            "train-seconds": 1.0,
            "arrays-bytes": 8,
        }
    )
    arrays = ArrayRecord({"w": Array(np.asarray(values, dtype=np.float32))})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), node, "train")


# --- 1. evaluation ---------------------------------------------------------------------------


def test_rank1_takes_each_members_best_template_and_misses_photos_without_a_face() -> None:
    """Store A by hand (gallery: m0 at 0 and 90 deg, m1 at 40, m2 at 200):

    80 deg (m0): m0 best template cos10 beats m1 cos40 -> right (its first template, or the
    mean of both, would lose to m1); 25 deg (m0): m1 cos15 beats m0 cos25 -> wrong;
    190 deg (m2) -> right; NO_FACE (m1) -> miss; 45 deg (m1) -> right. Rank-1 3/5, and with
    no strangers every right probe is accepted: FNIR 2/5.
    """
    scene = build_scene()
    score = score_model(scene.model, scene.evaluation, lfw=False)
    assert score.stores["A"].rank1 == pytest.approx(3 / 5)
    assert score.stores["A"].fnir_at_fpir == pytest.approx(2 / 5)


@pytest.mark.parametrize(
    ("fpir", "fnir"),
    [
        # 5 strangers, best scores cos10 > cos20 > cos30 > cos60 > -inf (no face).
        # Probes (label): 205 (m2, cos5), 220 (m2, exactly the cos20 stranger), 235 (m2,
        # cos35), 25 (m0, wrong: m1 at cos15), NO_FACE, 2 (m0, cos2), 215 (m2, cos15).
        (0.1, 5 / 7),  # allowed 0 -> t = cos10: only cos5 and cos2 are above
        (0.2, 4 / 7),  # allowed 1 -> t = cos20: + cos15; 220 equals t, not above
        (0.4, 3 / 7),  # allowed 2 -> t = cos30: + the 220 probe
        (0.6, 2 / 7),  # allowed 3 -> t = cos60: + cos35; every right probe now
        (0.8, 2 / 7),  # allowed 4 -> t = -inf (the stranger without a face)
        (1.0, 2 / 7),  # allowed 5 >= 5 strangers -> t = -inf
    ],
)
def test_fnir_uses_the_next_stranger_score_as_a_strict_threshold(fpir: float, fnir: float) -> None:
    """FNIR counts wrong probes, probes without a face, and right ones not strictly above t."""
    scene = build_scene(fpir=fpir)
    metrics = score_model(scene.model, scene.evaluation, lfw=False).stores["B"]
    assert metrics.rank1 == pytest.approx(5 / 7)  # 205, 220, 235, 2, 215 are right
    assert metrics.fnir_at_fpir == pytest.approx(fnir)


def test_a_stranger_without_a_face_is_never_accepted() -> None:
    """Store B's stranger without a face sorts below every real one (t stays cos20 at FPIR 0.2).

    Its index, -1, read as an array index would be store B's template at 0 deg (the last crop,
    score 1.0), moving t up to cos10 and losing the cos15 probe: FNIR 5/7 instead of 4/7.
    Dropping it from the count instead (4 strangers, allowed 0 at 20%) would give t = cos10 too.
    """
    scene = build_scene(fpir=0.2)
    assert score_model(scene.model, scene.evaluation, lfw=False).stores["B"].fnir_at_fpir == (
        pytest.approx(4 / 7)
    )
    # Every stranger without a face: t is -inf at any FPIR < 1, so FNIR = 1 - rank-1.
    b = scene.evaluation.store("B")
    faceless = dataclasses.replace(b, strangers=ints([NO_FACE] * 5))
    evaluation = dataclasses.replace(scene.evaluation, stores=(faceless,), fpir=0.2)
    metrics = score_model(scene.model, evaluation, lfw=False).stores["B"]
    assert metrics.fnir_at_fpir == pytest.approx(2 / 7)


def test_each_store_is_measured_at_its_own_threshold() -> None:
    """Store B at the threshold the store itself would use, worked out by hand at FPIR 0.2.

    Reference: calibration people at 100, 160 and 300 deg give impostor scores cos60, cos140,
    cos160; 4 templates allow 3 * (1 - 0.8 ** (1/4)) < 1 pair above, so it is the highest,
    cos60 = 0.5. Own camera: B's members searched against each other (m0 at 0 and 90, m1 at
    40, m2 at 200) give cos40 twice as the highest member-level scores; 8 scores and 3 members
    allow none above, so it is cos40 = 0.766, stricter, and it governs. Strangers' best scores
    cos10, cos20 and cos30 are above it (cos60 and the faceless one are not): FPIR 3/5. Probes:
    205, 220, 235, 2 and 215 deg are found; 25 deg is given to m1, and one has no face: FNIR 2/7.
    """
    scene = build_scene(fpir=0.2)
    calibration = [scene.model.add(unit(d)) for d in (100, 160, 300)]
    evaluation = dataclasses.replace(
        scene.evaluation,
        crops=scene.model.crops(range(len(scene.model.table))),
        calibration=ints(calibration),
    )
    metrics = score_model(scene.model, evaluation, lfw=False).stores["B"]
    assert metrics.operating_threshold == pytest.approx(cosd(40), abs=1e-6)
    assert metrics.threshold_set_by == "own camera"
    assert metrics.fpir_measured == pytest.approx(3 / 5)
    assert metrics.fnir_at_operating == pytest.approx(2 / 7)
    # At the reference's cos60 the 25 deg probe is still given to m1: the same misses.
    assert metrics.fnir_at_reference == pytest.approx(2 / 7)
    # Without calibration people the store's own threshold is not measured.
    assert score_model(scene.model, scene.evaluation, lfw=False).stores["B"].fpir_measured is None


def test_stores_restricts_the_stores_scored() -> None:
    """A local-only model is judged on its own store: B's numbers, and no A crop embedded."""
    scene = build_scene()
    everything = score_model(scene.model, scene.evaluation, lfw=False)
    scene.model.asked.clear()
    only_b = score_model(scene.model, scene.evaluation, stores=["B"], lfw=False)
    assert set(everything.stores) == {"A", "B"}
    assert set(only_b.stores) == {"B"}
    assert only_b.stores["B"] == everything.stores["B"]
    assert not set(scene.model.asked) & set(scene.only_a)
    assert only_b.tar == everything.tar  # held-out conditions are measured regardless
    assert score_model(scene.model, scene.evaluation, stores=[], lfw=False).stores == {}


def test_lfw_false_skips_lfw_and_never_embeds_its_crops() -> None:
    """``lfw=False`` (and an empty pair list) measure no LFW accuracy and embed no LFW crop."""
    scene = build_scene()
    score = score_model(scene.model, scene.evaluation, lfw=False)
    assert score.lfw_accuracy is None
    assert not set(scene.model.asked) & set(scene.lfw_ids)
    # No pairs at all: not measured either, even when asked.
    empty = build_scene(lfw=False)
    assert score_model(empty.model, empty.evaluation, lfw=True).lfw_accuracy is None


def test_lfw_accuracy_is_ten_fold_style_cross_validation() -> None:
    """Two folds (cosines g: genuine, i: impostor).

    Fold 0: g .90 .80, i .25 .85. Fold 1: g .95 .40, i .10 .20.
    Fitted on fold 1 the best threshold is .30 (all right); on fold 0 it scores 3/4 (the .85
    impostor passes). Fitted on fold 0 the best accuracy, 3/4, is reached first at .525
    (between .25 and .80); on fold 1 the .40 genuine pair fails: 3/4. Mean 0.75.
    """
    scene = build_scene()
    accuracy = score_model(scene.model, scene.evaluation).lfw_accuracy
    assert accuracy == pytest.approx(0.75)
    scores = [s for s, _, _ in LFW_DESIGN]
    same = [g for _, g, _ in LFW_DESIGN]
    folds = [f for _, _, f in LFW_DESIGN]
    assert accuracy == pytest.approx(kfold_accuracy(scores, same, folds)[0])


def test_lfw_accuracy_with_one_fold_uses_its_own_best_threshold() -> None:
    """All eight pairs in one fold: the best threshold (.325, between .25 and .40) gets all
    but the .85 impostor right: 7/8 (cross-validation cannot run on one fold)."""
    scene = build_scene(folds=[4] * len(LFW_DESIGN))
    assert score_model(scene.model, scene.evaluation).lfw_accuracy == pytest.approx(7 / 8)


def test_tar_per_condition_is_tar_at_far_over_all_pairs() -> None:
    """low_light: people 0 0 1 1 at 0 10 30 100 deg; pairs g cos10, g cos70, impostors cos30
    cos100 cos20 cos90: below 100 impostors t is the highest, cos20: TAR 1/2.
    grayscale: people 0 1 0 at 0 50 5 deg: g cos5 above i cos45 and cos50: TAR 1.
    motion_blur: 20 people x 2 random vectors, checked against tar_at_far pair by pair."""
    scene = build_scene()
    tar = score_model(scene.model, scene.evaluation, lfw=False).tar
    assert set(tar) == {"low_light", "grayscale", "motion_blur"}
    assert tar["low_light"] == {"1e-2": pytest.approx(0.5), "1e-3": pytest.approx(0.5)}
    assert tar["grayscale"] == {"1e-2": pytest.approx(1.0), "1e-3": pytest.approx(1.0)}

    condition = scene.random_condition
    vectors = [scene.model.table[i].astype(np.float64) for i in condition.crops]
    scores, same = [], []
    for i in range(len(vectors)):
        for j in range(i + 1, len(vectors)):
            scores.append(float(vectors[i] @ vectors[j]))
            same.append(bool(condition.people[i] == condition.people[j]))
    assert len(scores) == 40 * 39 // 2 and sum(same) == 20
    expected = {
        far: tar_at_far(scores, same, value) for far, value in (("1e-2", 1e-2), ("1e-3", 1e-3))
    }
    assert tar["motion_blur"] == pytest.approx(expected)
    assert expected["1e-2"] >= expected["1e-3"]  # 760 impostors: 7 may pass at 1e-2, none at 1e-3


def test_scene_cosines_are_what_the_docstrings_say() -> None:
    """Guards the hand maths above: the fake vectors' cosines are the intended angles."""
    assert float(unit(80) @ unit(90)) == pytest.approx(cosd(10), abs=1e-6)
    assert float(unit(260) @ unit(200)) == pytest.approx(cosd(60), abs=1e-6)
    assert float(unit(25) @ unit(40)) > float(unit(25) @ unit(0))  # 25 deg goes to member 1
    assert cosd(15) > cosd(20) > cosd(35) > cosd(60)


# --- 2. photos -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline.load()


@pytest.fixture(scope="module")
def two_photos(lfw_images: Path) -> list[Path]:
    """The first photo of the first two people in LFW."""
    people = sorted(p for p in lfw_images.iterdir() if p.is_dir())[:2]
    return [sorted(person.glob("*.jpg"))[0] for person in people]


def test_low_light_noise_is_seeded_by_the_seed(two_photos: list[Path]) -> None:
    """Same shot and seed, same image; another seed, other sensor noise."""
    shot = Shot(two_photos[0], "low_light")
    first, again, other = camera_image(shot, 7), camera_image(shot, 7), camera_image(shot, 8)
    assert first.dtype == np.uint8 and first.shape == load_image(two_photos[0]).shape
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    # Darker than the photo: low light, not just noise.
    assert float(first.mean()) < float(load_image(two_photos[0]).mean())


@pytest.mark.parametrize("condition", ["yale", "clean"])
def test_yale_and_clean_leave_the_photo_as_it_is(two_photos: list[Path], condition: str) -> None:
    """No simulated camera for Yale, and a clean camera changes nothing, whatever the seed."""
    original = load_image(two_photos[0])
    for seed in (0, 1):
        assert np.array_equal(camera_image(Shot(two_photos[0], condition), seed), original)


def test_photobook_aligns_each_shot_once_and_the_same_way(
    pipeline: FacePipeline, two_photos: list[Path], tmp_path: Path
) -> None:
    """Two books with the same seed give the same crops; shots repeated are aligned once."""
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((160, 160, 3), 128, np.uint8)).save(grey)
    shots = [Shot(two_photos[0], "clean"), Shot(two_photos[1], "clean"), Shot(grey, "clean")]
    crops = []
    for _ in range(2):
        book = PhotoBook(pipeline, seed=3)
        steps: list[int] = []
        book.align([*shots, shots[0], shots[1]], advance=steps.append)
        assert steps == [1, 1, 1] and len(book) == 3
        book.align(shots, advance=steps.append)  # nothing left to do
        assert steps == [1, 1, 1]
        crops.append([book.crop(shot) for shot in shots])
    for first, second in zip(crops[0][:2], crops[1][:2], strict=True):
        assert first is not None and second is not None
        assert first.shape == (112, 112, 3) and first.dtype == np.uint8
        assert np.array_equal(first, second)
    one, other = crops[0][0], crops[0][1]
    assert one is not None and other is not None
    assert not np.array_equal(one, other)  # two different people
    assert crops[0][2] is None and crops[1][2] is None  # a blank grey picture has no face


def test_photobook_missing_and_unaligned_crop(pipeline: FacePipeline, tmp_path: Path) -> None:
    """``missing`` keeps the first of each shot, in order, minus those aligned; an unaligned
    shot's crop is a KeyError, and the same photo under another condition is another shot."""
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((120, 100, 3), 90, np.uint8)).save(grey)
    a, b, c = Shot(grey, "clean"), Shot(tmp_path / "b.png", "clean"), Shot(grey, "low_light")
    book = PhotoBook(pipeline, seed=0)
    assert book.missing([b, a, b, c, a]) == [b, a, c]
    book.align([a])
    assert book.missing([b, a, b, c, a]) == [b, c]
    assert book.crop(a) is None
    with pytest.raises(KeyError):
        book.crop(c)
    with pytest.raises(KeyError):
        book.crop(b)


# --- 3. round_training_config ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "seed"),
    [
        ({"seed": 7, "server-round": 3}, 10),
        ({"seed": 7}, 7),
        ({"server-round": 2}, 2),  # default seed 0
        ({"seed": 7, "server-round": True}, 7),  # a bool is no round number
        ({"seed": 7, "server-round": 3.0}, 7),  # nor a float
        ({"seed": 7, "server-round": "3"}, 7),  # nor a string
    ],
)
def test_round_training_config_offsets_the_seed_by_the_round(
    settings: dict[str, object], seed: int
) -> None:
    """Seed = run seed + ``server-round`` when that is an int (not a bool); else unchanged."""
    config = round_training_config({"local-epochs": 2, **settings})
    assert config.seed == seed
    assert config.local_epochs == 2  # the rest of the config is read as usual


# --- 4. StoreRounds' arrival-free order ------------------------------------------------------


@pytest.mark.usefixtures("task_identity")
def test_aggregation_does_not_depend_on_arrival_order() -> None:
    """Weights 1/6, 2/6, 3/6 on 6e8, 1.5, -2e8 (float32: the sum's order shows in the result).

    Plain FedAvg gives different bits for two arrival orders (so the check can fail);
    StoreRounds gives the same, those of FedAvg over the replies in num-examples order.
    """

    def replies() -> list[Message]:
        return [
            reply(1, [6e8, 0.5, 3.0], 1, members=2),
            reply(2, [1.5, 3e8, -7.0], 2, members=9),
            reply(3, [-2e8, -1e8, 1e-3], 3, members=1),
        ]

    arrived = [replies(), [replies()[i] for i in (2, 0, 1)]]
    plain = [FedAvg(weighted_by_key=WEIGHT_KEY).aggregate_train(1, r)[0] for r in arrived]
    assert plain[0] is not None and plain[1] is not None
    assert not np.array_equal(plain[0]["w"].numpy(), plain[1]["w"].numpy())

    results = []
    for order in arrived:
        inner = FedAvg(weighted_by_key=WEIGHT_KEY, train_metrics_aggr_fn=aggregate_round_metrics)
        strategy = StoreRounds(inner, 1, 1.0)
        arrays, metrics = strategy.aggregate_train(1, order)
        assert arrays is not None and metrics is not None
        assert metrics["stores-trained"] == 3 and metrics[WEIGHT_KEY] == 6
        results.append(arrays["w"].numpy())
    assert results[0].dtype == np.float32
    assert results[0].tobytes() == results[1].tobytes()
    by_examples = FedAvg(weighted_by_key=WEIGHT_KEY).aggregate_train(1, replies())[0]
    assert by_examples is not None
    assert results[0].tobytes() == by_examples["w"].numpy().tobytes()


@pytest.mark.usefixtures("task_identity")
def test_arrival_free_order_sorts_by_examples_members_then_losses() -> None:
    """Any shuffle sorts to the hand order: num-examples, then members, then the two losses."""
    expected = [
        reply(1, [0.0], 5, members=9, losses=(9.0, 9.0)),
        reply(2, [0.0], 10, members=3, losses=(2.0, 2.0)),
        reply(3, [0.0], 10, members=5, losses=(0.9, 0.9)),
        reply(4, [0.0], 10, members=5, losses=(1.0, 0.4)),
        reply(5, [0.0], 10, members=5, losses=(1.0, 0.5)),
        reply(6, [0.0], 20, members=1, losses=(0.1, 0.1)),
    ]
    assert _arrival_free_order(expected[3]) == (10.0, 5.0, 1.0, 0.4)
    for seed in range(5):
        shuffled = expected[:]
        random.Random(seed).shuffle(shuffled)
        ordered = sorted(shuffled, key=_arrival_free_order)
        assert [m.metadata.dst_node_id for m in ordered] == [1, 2, 3, 4, 5, 6]


# --- 5. results ------------------------------------------------------------------------------


def _round(
    number: int,
    rank1: tuple[float, float],
    tar: dict[str, dict[str, float]],
    *,
    lfw: float | None = None,
    sent: int = 0,
    seconds: float = 0.0,
    epsilon: float | None = None,
) -> RoundResult:
    stores = {
        "s1": StoreMetrics(rank1=rank1[0], fnir_at_fpir=1 - rank1[0]),
        "s2": StoreMetrics(rank1=rank1[1], fnir_at_fpir=0.5),
    }
    return RoundResult(number, stores, tar, lfw, sent, seconds, epsilon)


TAR = {"low_light": {"1e-2": 0.5, "1e-3": 0.25}, "yale": {"1e-2": 1.0, "1e-3": 0.75}}


def _strategy_rounds() -> list[RoundResult]:
    return [
        _round(0, (0.2, 0.4), TAR, lfw=0.99, sent=999, seconds=50.0),
        _round(1, (0.5, 0.7), TAR, lfw=0.97, sent=100, seconds=2.0, epsilon=1.0),
        _round(2, (0.6, 1.0), TAR, lfw=None, sent=300, seconds=4.5, epsilon=3.25),
    ]


def test_summarise_by_hand() -> None:
    """Last round's stores and TAR; LFW from round 1 (round 2 skipped it); bytes and seconds
    over rounds 1 and 2 only: (100 + 300) / 2 and (2 + 4.5) / 2; epsilon of the last round."""
    result = StrategyResult.summarise("fedavg", _strategy_rounds(), "a note")
    assert result.final == {
        "rank1": pytest.approx(0.8),
        "fnir_at_fpir_1e-2": pytest.approx((0.4 + 0.5) / 2),
        "tar_at_far_1e-2": pytest.approx(0.75),
        "tar_at_far_1e-3": pytest.approx(0.5),
        "lfw_accuracy": pytest.approx(0.97),
        "bytes_per_round": pytest.approx(200.0),
        "seconds_per_round": pytest.approx(3.25),
        "epsilon": pytest.approx(3.25),
    }
    assert result.notes == "a note" and result.strategy == "fedavg"


def test_summarise_of_round_zero_only_and_without_lfw() -> None:
    """Round 0 alone costs nothing per round; no round with LFW gives None."""
    alone = _strategy_rounds()[:1]
    final = StrategyResult.summarise("none", alone).final
    assert final["bytes_per_round"] == 0.0 and final["seconds_per_round"] == 0.0
    assert final["lfw_accuracy"] == pytest.approx(0.99)
    blind = [dataclasses.replace(r, lfw_accuracy=None) for r in _strategy_rounds()]
    assert StrategyResult.summarise("x", blind).final["lfw_accuracy"] is None


def test_tar_at_averages_over_conditions() -> None:
    """TAR at a FAR is the plain mean over held-out conditions (0 with none)."""
    last = _strategy_rounds()[-1]
    assert last.tar_at("1e-2") == pytest.approx((0.5 + 1.0) / 2)
    assert last.tar_at("1e-3") == pytest.approx((0.25 + 0.75) / 2)
    three = dataclasses.replace(last, tar={**TAR, "grey": {"1e-2": 0.0, "1e-3": 0.0}})
    assert three.tar_at("1e-2") == pytest.approx(0.5)
    assert dataclasses.replace(last, tar={}).tar_at("1e-2") == 0.0


def test_results_round_trip_through_the_file(tmp_path: Path) -> None:
    """``write`` then ``read`` gives equal results, None values and strategy order kept."""
    results = SimulationResults(
        experiment="tiny",
        seed=11,
        settings={"rounds": 2, "stores": [{"id": "s1"}, {"id": "s2"}], "dp": None},
        stores=[{"store": "s1", "members": 3}, {"store": "s2", "members": 4}],
        heldout=[{"condition": "yale", "people": 2}],
        lfw_pairs=8,
        strategies={
            "fedavg": StrategyResult.summarise("fedavg", _strategy_rounds(), "two\nlines"),
            "none": StrategyResult.summarise("none", _strategy_rounds()[:1]),
        },
        seconds=12.5,
    )
    path = results.write(tmp_path / "out")
    assert path == tmp_path / "out" / "results.json"
    back = SimulationResults.read(tmp_path / "out")
    assert back == results
    assert list(back.strategies) == ["fedavg", "none"]
    assert back.strategies["fedavg"].rounds[2].lfw_accuracy is None
    assert back.strategies["fedavg"].rounds[1].epsilon == 1.0
    assert isinstance(back.strategies["fedavg"].rounds[0].stores["s1"], StoreMetrics)
    results.write(tmp_path / "out")  # replaces the file
    assert SimulationResults.read(tmp_path / "out") == results
