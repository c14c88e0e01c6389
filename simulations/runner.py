"""``loyalnet sim run``: one experiment, every strategy, from the photos to ``results.json``.

The steps, in order:

1. draw who is a member of which store, their enrolment and probe photos, the strangers and the
   held-out people (:mod:`simulations.population`);
2. take every photo through its store's camera, find and align the face once
   (:mod:`simulations.photos`), and gather the evaluation set (:mod:`simulations.evaluation`);
3. create a real store folder per store, members enrolled with consent (:mod:`.stores`), and
   a pooled one when the centralized baseline is asked for;
4. score the pretrained model (round 0, and the whole of strategy ``none``);
5. run the strategies: the baselines in this process (:mod:`simulations.baselines`), the
   federated ones together on Flower's simulation engine (:mod:`simulations.federated`), every
   round's model scored as it comes;
6. write ``results.json`` and the report (:mod:`simulations.report`).

Everything the run writes goes under the output folder: ``stores/`` (the enrolled store
folders; biometric data, sealed with each store's key, as in a real store), ``work/``
(copies trained on), ``simulation.log`` (timings, every round's scores, the engine's log),
``results.json``, ``report.md`` and
the plots.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from coordinator.initial_model import pretrained_backbone
from simulations.baselines import train_alone
from simulations.evaluation import (
    NO_FACE,
    EvaluationSet,
    LfwPairs,
    ModelScore,
    StoreTestSet,
    VerificationSet,
    embedder_for,
    score_model,
)
from simulations.experiment import Experiment
from simulations.federated import FEDERATED_STRATEGIES, run_federated
from simulations.photos import PhotoBook, Shot
from simulations.population import Population, SimMember, draw_population
from simulations.report import write_report
from simulations.results import RoundResult, SimulationResults, StoreMetrics, StrategyResult
from simulations.stores import create_store, fresh_copies
from store_node.config import TrainingLimits
from store_node.datasets.lfw import Pair, lfw_pairs
from store_node.face import FacePipeline

LOG_FILE = "simulation.log"
"""The run's log in the output folder: phases with their timings, every round's scores, and
Flower's and Ray's own messages."""

CROP_BYTES = 112 * 112 * 3
"""Bytes of one aligned crop: what pooling the stores' data moves per photo, at the least."""


@dataclass(frozen=True)
class _Run:
    """What every strategy of one run shares: the experiment, where to write, the starting
    model and its score, the evaluation set, the progress display."""

    experiment: Experiment
    out: Path
    initial: dict[str, torch.Tensor]
    evaluation: EvaluationSet
    round0: ModelScore
    shown: Progress

    def score(
        self,
        backbone: dict[str, torch.Tensor],
        server_round: int,
        stores: Sequence[str] | None = None,
        every_round_heldout: bool = True,
    ) -> ModelScore:
        """Score the model after ``server_round``: the stores' metrics always; TAR on the
        held-out people every round or (``every_round_heldout`` False) at the first and last;
        LFW at the first and last, or every round when the experiment asks for it."""
        ends = server_round in (0, self.experiment.rounds)
        tick = time.perf_counter()
        score = score_model(
            embedder_for(backbone),
            self.evaluation,
            stores=stores,
            heldout=every_round_heldout or ends,
            lfw=self.experiment.evaluation.lfw_every_round or ends,
        )
        _log.info(
            "round %d%s: %s (scored in %.1f s)",
            server_round,
            f" {', '.join(stores)}" if stores else "",
            _summary(score),
            time.perf_counter() - tick,
        )
        return score


Costs = dict[int, tuple[int, float, float | None]]
"""Per round: bytes moved, seconds of training, epsilon (or None)."""


_log = logging.getLogger(__name__)


def run_experiment(
    experiment: Experiment,
    out: Path,
    *,
    home: Path | None = None,
    progress: Progress | None = None,
    backend_config: dict[str, Any] | None = None,
) -> SimulationResults:
    """Run every strategy of ``experiment``; write results, report and plots into ``out``.

    Args:
        out: the output folder; must not hold an earlier run's ``stores/`` (choose another).
        home: the shared data folder; None finds it as ``loyalnet.assets.data_home()`` does.
        progress: where to show progress; None shows nothing.
        backend_config: Flower simulation backend settings (e.g. a Ray cluster's address).

    Raises:
        ExperimentError: the experiment cannot be drawn from the data.
        FileExistsError: ``out`` already holds a run.
    """
    started = time.perf_counter()
    shown = progress or Progress(disable=True)
    if (out / "stores").exists():
        raise FileExistsError(
            f"{out} already holds a simulation (stores/); choose another --out folder or "
            "delete that one."
        )
    out.mkdir(parents=True, exist_ok=True)
    with _run_log(out / LOG_FILE):
        _log.info(
            "experiment %s (seed %d) from %s", experiment.name, experiment.seed, experiment.source
        )
        population = draw_population(experiment, home)
        pipeline = FacePipeline.load(home)
        book = PhotoBook(pipeline, experiment.seed)
        pairs = _lfw_pairs(experiment, population, home)
        tick = time.perf_counter()
        _align(book, population, pairs, shown)
        _log.info("aligned %d photos in %.0f s", len(book), time.perf_counter() - tick)
        evaluation = _evaluation_set(experiment, population, book, pairs)
        tick = time.perf_counter()
        originals, pooled = _create_stores(experiment, population, book, pipeline, out, shown)
        _log.info("created %d store folders in %.0f s", len(originals), time.perf_counter() - tick)

        initial = pretrained_backbone(home)
        task = shown.add_task("scoring the pretrained model", total=1)
        round0 = score_model(embedder_for(initial), evaluation)
        shown.advance(task)
        run = _Run(experiment, out, initial, evaluation, round0, shown)
        _log.info("round 0 (pretrained): %s", _summary(round0))
        results: dict[str, StrategyResult] = {}
        federated = [s for s in experiment.strategies if s in FEDERATED_STRATEGIES]
        for strategy in experiment.strategies:
            tick = time.perf_counter()
            if strategy == "none":
                results[strategy] = _summarise(strategy, {0: round0}, {}, "")
            elif strategy == "local-only":
                results[strategy] = _local_only(run, originals)
            elif strategy == "centralized":
                assert pooled is not None  # created whenever "centralized" is a strategy
                results[strategy] = _centralized(run, pooled)
            elif strategy == federated[0]:
                results.update(_federated(run, federated, originals, backend_config))
            else:
                continue  # ran together with the first federated strategy
            ran = federated if strategy in federated else [strategy]
            _log.info("%s done in %.0f s", ", ".join(ran), time.perf_counter() - tick)
    ordered = {name: results[name] for name in experiment.strategies}
    simulation = SimulationResults(
        experiment=experiment.name,
        seed=experiment.seed,
        settings=experiment.as_dict(),
        stores=_describe(population, book),
        heldout=[
            {
                "condition": v.condition,
                "people": int(np.unique(v.people).size),
                "photos": v.crops.size,
                "photos_without_face": sum(map(len, drawn.people.values())) - v.crops.size,
            }
            for v, drawn in zip(evaluation.heldout, population.heldout, strict=True)
        ],
        lfw_pairs=len(evaluation.lfw),
        strategies=ordered,
        seconds=time.perf_counter() - started,
        peak_rss_mb=_peak_rss_mb(),
    )
    simulation.write(out)
    write_report(out)
    return simulation


# -- photos and the evaluation set ------------------------------------------------------------


def _peak_rss_mb() -> float:
    """This process's peak resident memory, in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _describe(population: Population, book: PhotoBook) -> list[dict[str, Any]]:
    """Per store, what was drawn and how many of its photos the detector found no face in
    (such enrolment photos enrol nothing; such probes count as misses)."""
    described = population.describe()
    for entry, store in zip(described, population.stores, strict=True):

        def faceless(paths: Sequence[Path], condition: str = store.condition) -> int:
            return sum(book.crop(Shot(path, condition)) is None for path in paths)

        entry["enrol_photos_without_face"] = sum(faceless(m.enrol) for m in store.members)
        entry["probes_without_face"] = sum(faceless(m.probes) for m in store.members)
        entry["strangers_without_face"] = faceless(store.strangers)
    return described


def _lfw_pairs(experiment: Experiment, population: Population, home: Path | None) -> list[Pair]:
    """View 2 pairs of the experiment's folds, without pairs showing a trained person."""
    trained = population.trained_people
    return [
        pair
        for pair in lfw_pairs(home)
        if pair.fold < experiment.evaluation.lfw_folds
        and pair.left.parent.name not in trained
        and pair.right.parent.name not in trained
    ]


def _store_shots(population: Population) -> list[Shot]:
    shots = []
    for store in population.stores:
        for member in store.members:
            shots += [Shot(path, store.condition) for path in (*member.enrol, *member.probes)]
        shots += [Shot(path, store.condition) for path in store.strangers]
    for heldout in population.heldout:
        for photos in heldout.people.values():
            shots += [Shot(path, heldout.condition) for path in photos]
    shots += [Shot(path, "clean") for path in population.calibration]
    return shots


def _align(book: PhotoBook, population: Population, pairs: Sequence[Pair], shown: Progress) -> None:
    stores = book.missing(_store_shots(population))
    lfw = book.missing(Shot(path, "clean") for pair in pairs for path in (pair.left, pair.right))
    task = shown.add_task("finding and aligning faces", total=len(stores) + len(lfw))
    book.align(stores, advance=lambda n: shown.advance(task, n))
    book.align(lfw, benchmark=True, advance=lambda n: shown.advance(task, n))


class _CropIndex:
    """Collects crops into one array, handing out their indices (``NO_FACE`` for none)."""

    def __init__(self, book: PhotoBook) -> None:
        self._book = book
        self._index: dict[Shot, int] = {}
        self._crops: list[np.ndarray] = []

    def of(self, shot: Shot) -> int:
        if shot not in self._index:
            crop = self._book.crop(shot)
            if crop is None:
                return NO_FACE
            self._index[shot] = len(self._crops)
            self._crops.append(crop)
        return self._index[shot]

    def array(self) -> np.ndarray:
        if not self._crops:
            return np.zeros((0, 112, 112, 3), dtype=np.uint8)
        return np.stack(self._crops)


def _evaluation_set(
    experiment: Experiment, population: Population, book: PhotoBook, pairs: Sequence[Pair]
) -> EvaluationSet:
    index = _CropIndex(book)
    stores = []
    for store in population.stores:
        gallery: list[int] = []
        gallery_labels: list[int] = []
        probes: list[int] = []
        probe_labels: list[int] = []
        enrolled = 0
        for member in store.members:
            crops = [index.of(Shot(path, store.condition)) for path in member.enrol]
            found = [crop for crop in crops if crop != NO_FACE]
            if not found:
                continue  # never enrolled (see simulations.stores): not a member to find
            gallery += found
            gallery_labels += [enrolled] * len(found)
            for path in member.probes:
                probes.append(index.of(Shot(path, store.condition)))
                probe_labels.append(enrolled)
            enrolled += 1
        stores.append(
            StoreTestSet(
                store_id=store.store_id,
                gallery=np.array(gallery, dtype=np.int64),
                gallery_labels=np.array(gallery_labels, dtype=np.int64),
                probes=np.array(probes, dtype=np.int64),
                probe_labels=np.array(probe_labels, dtype=np.int64),
                strangers=np.array(
                    [index.of(Shot(path, store.condition)) for path in store.strangers],
                    dtype=np.int64,
                ),
            )
        )
    heldout = []
    for group in population.heldout:
        seen: list[int] = []
        people: list[int] = []
        for number, photos in enumerate(group.people.values()):
            for path in photos:
                crop = index.of(Shot(path, group.condition))
                if crop != NO_FACE:
                    seen.append(crop)
                    people.append(number)
        heldout.append(
            VerificationSet(
                group.condition, np.array(seen, dtype=np.int64), np.array(people, dtype=np.int64)
            )
        )
    calibration = [index.of(Shot(path, "clean")) for path in population.calibration]
    lfw_crops, lfw = _lfw_crops(book, pairs)
    return EvaluationSet(
        crops=index.array(),
        stores=tuple(stores),
        heldout=tuple(heldout),
        lfw_crops=lfw_crops,
        lfw=lfw,
        fpir=experiment.evaluation.fpir,
        calibration=np.array([c for c in calibration if c != NO_FACE], dtype=np.int64),
    )


def _lfw_crops(book: PhotoBook, pairs: Sequence[Pair]) -> tuple[np.ndarray, LfwPairs]:
    images = sorted({path for pair in pairs for path in (pair.left, pair.right)})
    position = {path: i for i, path in enumerate(images)}
    stacked = np.zeros((len(images), 112, 112, 3), dtype=np.uint8)
    for i, path in enumerate(images):
        crop = book.crop(Shot(path, "clean"))
        if crop is not None:  # always found: the benchmark's choice falls back to the centre
            stacked[i] = crop
    return stacked, LfwPairs(
        left=np.array([position[p.left] for p in pairs], dtype=np.int64),
        right=np.array([position[p.right] for p in pairs], dtype=np.int64),
        same=np.array([p.same for p in pairs], dtype=np.bool_),
        folds=np.array([p.fold for p in pairs], dtype=np.int64),
    )


# -- store folders --------------------------------------------------------------------------


def _create_stores(
    experiment: Experiment,
    population: Population,
    book: PhotoBook,
    pipeline: FacePipeline,
    out: Path,
    shown: Progress,
) -> tuple[list[Path], Path | None]:
    members = sum(len(store.members) for store in population.stores)
    pooled_wanted = "centralized" in experiment.strategies
    task = shown.add_task("enrolling members", total=members * (2 if pooled_wanted else 1))
    training = experiment.training
    limits = TrainingLimits.admitting(
        local_epochs=training.local_epochs,
        learning_rate=training.learning_rate,
        min_members=training.min_members,
    )
    originals = []
    everyone: list[tuple[SimMember, str]] = []
    for store in population.stores:
        folder = out / "stores" / store.store_id
        own = [(member, store.condition) for member in store.members]
        create_store(
            folder, store.store_id, own, book, pipeline, lambda n: shown.advance(task, n), limits
        )
        originals.append(folder)
        everyone += own
    pooled = None
    if pooled_wanted:
        pooled = out / "stores-pooled" / "pooled"
        create_store(
            pooled, "pooled", everyone, book, pipeline, lambda n: shown.advance(task, n), limits
        )
    return originals, pooled


# -- strategies -----------------------------------------------------------------------------


def _federated(
    run: _Run,
    strategies: list[str],
    originals: list[Path],
    backend_config: dict[str, Any] | None,
) -> dict[str, StrategyResult]:
    rounds = run.experiment.rounds
    tasks = {s: run.shown.add_task(f"{s}: round 0/{rounds}", total=rounds) for s in strategies}
    scores: dict[str, dict[int, ModelScore]] = {s: {0: run.round0} for s in strategies}

    def on_round(strategy: str, server_round: int, backbone: dict[str, torch.Tensor]) -> None:
        if server_round == 0:
            return  # the pretrained model, scored once for all strategies
        scores[strategy][server_round] = run.score(backbone, server_round)
        run.shown.update(tasks[strategy], description=f"{strategy}: round {server_round}/{rounds}")
        run.shown.advance(tasks[strategy])

    costs = run_federated(
        run.experiment,
        strategies,
        originals,
        run.out / "work",
        run.initial,
        on_round,
        backend_config,
    )
    results = {}
    for strategy in strategies:
        spent: Costs = {
            n: (c.bytes, c.seconds, c.epsilon) for n, c in enumerate(costs[strategy], 1)
        }
        results[strategy] = _summarise(strategy, scores[strategy], spent, "")
    return results


def _centralized(run: _Run, pooled: Path) -> StrategyResult:
    rounds = run.experiment.rounds
    task = run.shown.add_task(f"centralized: {rounds} rounds", total=rounds)
    folder = fresh_copies([pooled], run.out / "work" / "centralized")[0]
    scores = {0: run.round0}
    costs: Costs = {}

    def after_round(server_round: int, backbone: dict[str, torch.Tensor], seconds: float) -> None:
        scores[server_round] = run.score(backbone, server_round)
        costs[server_round] = (0, seconds, None)
        run.shown.advance(task)

    outcome = train_alone(folder, run.initial, run.experiment.store_training(), rounds, after_round)
    crops = sum(test.gallery.size for test in run.evaluation.stores)
    note = (
        f"pooled {crops} enrolment crops of every store in one place "
        f"({crops * CROP_BYTES / 1e6:.1f} MB of face images moved once, at the least)"
    )
    if outcome.declined_rounds:
        note += f"; declined {outcome.declined_rounds} round(s): {outcome.reason}"
    return _summarise("centralized", scores, costs, note)


def _local_only(run: _Run, originals: list[Path]) -> StrategyResult:
    """Each store alone; a round's score gathers each store's own model on its own store,
    and (at the last round) TAR and LFW accuracy averaged over the stores' models."""
    rounds = run.experiment.rounds
    task = run.shown.add_task("local-only", total=rounds * len(originals))
    folders = fresh_copies(originals, run.out / "work" / "local-only")
    per_store: dict[int, list[ModelScore]] = {}
    seconds: dict[int, float] = {}
    declined: list[str] = []
    for folder in folders:

        def after_round(
            server_round: int,
            backbone: dict[str, torch.Tensor],
            spent: float,
            store: str = folder.name,
        ) -> None:
            # TAR of eight models a round would cost more than every other strategy together.
            score = run.score(backbone, server_round, stores=[store], every_round_heldout=False)
            per_store.setdefault(server_round, []).append(score)
            seconds[server_round] = seconds.get(server_round, 0.0) + spent
            run.shown.advance(task)

        outcome = train_alone(
            folder, run.initial, run.experiment.store_training(), rounds, after_round
        )
        if outcome.declined_rounds:
            declined.append(f"{folder.name} ({outcome.reason})")
    scores = {0: run.round0} | {n: _average(s) for n, s in per_store.items()}
    note = (
        "each store's own model on its own members; TAR and LFW averaged over the stores' "
        "models, measured at the last round only"
    )
    if declined:
        note += "; declined: " + ", ".join(declined)
    costs: Costs = {n: (0, spent, None) for n, spent in seconds.items()}
    return _summarise("local-only", scores, costs, note)


def _average(store_scores: Sequence[ModelScore]) -> ModelScore:
    """Stores' own models together: each store's metrics, TAR and LFW averaged over models."""
    stores: dict[str, StoreMetrics] = {}
    for score in store_scores:
        stores.update(score.stores)
    tar = {
        condition: {
            far: float(np.mean([score.tar[condition][far] for score in store_scores]))
            for far in values
        }
        for condition, values in store_scores[0].tar.items()
    }
    lfw = [s.lfw_accuracy for s in store_scores if s.lfw_accuracy is not None]
    return ModelScore(stores, tar, float(np.mean(lfw)) if lfw else None)


def _summarise(
    strategy: str, scores: dict[int, ModelScore], costs: Costs, notes: str
) -> StrategyResult:
    rounds = []
    for server_round, score in sorted(scores.items()):
        sent, seconds, epsilon = costs.get(server_round, (0, 0.0, None))
        rounds.append(
            RoundResult(
                round=server_round,
                stores=score.stores,
                tar=score.tar,
                lfw_accuracy=score.lfw_accuracy,
                bytes=sent,
                seconds=seconds,
                epsilon=epsilon,
            )
        )
    return StrategyResult.summarise(strategy, rounds, notes)


def _summary(score: ModelScore) -> str:
    """One line of a score, for the log."""
    rank1 = np.mean([m.rank1 for m in score.stores.values()])
    fnir = np.mean([m.fnir_at_fpir for m in score.stores.values()])
    parts = [f"rank-1 {rank1:.3f}", f"FNIR {fnir:.3f}"]
    parts += [f"TAR {c} {v['1e-2']:.3f}/{v['1e-3']:.3f}" for c, v in score.tar.items()]
    if score.lfw_accuracy is not None:
        parts.append(f"LFW {score.lfw_accuracy:.4f}")
    return ", ".join(parts)


@contextmanager
def _run_log(path: Path) -> Iterator[None]:
    """The run's own log, Flower's and Ray's into ``path`` instead of over the progress
    display."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in ("flwr", "ray", __name__)]
    saved = []
    own = loggers[-1]
    own_level = own.level
    own.setLevel(logging.INFO)
    for logger in loggers:
        saved.append((logger, [(h, h.level) for h in logger.handlers]))
        for existing in logger.handlers:
            existing.setLevel(logging.WARNING)
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger, handlers in saved:
            logger.removeHandler(handler)
            for existing, level in handlers:
                existing.setLevel(level)
        own.setLevel(own_level)
        handler.close()
