"""LFW View 2 verification benchmark of the face pipeline.

Each unique image of the selected pairs is detected, its labelled face chosen and aligned
(:mod:`store_node.bench.face_choice`), and embedded; a pair's score is the cosine similarity of
its two embeddings. Accuracy follows the View 2 protocol: per test fold, the threshold is fitted
on the other folds.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from store_node.bench.face_choice import LOW_SCORE_THRESHOLD, FaceChooser, FaceSource
from store_node.bench.verification import kfold_accuracy, tar_at_far
from store_node.datasets import Pair, lfw_pairs
from store_node.face import FacePipeline, load_image

ProgressCallback = Callable[[int, int], None]
"""Called with (images done, images in total) as the benchmark goes."""

EMBED_BATCH = 64
"""Crops per embedding call: large enough to amortise the call, small enough for memory."""

NO_FACE_HANDLING = (
    "images with no detection at the default score threshold were detected again at threshold "
    f"{LOW_SCORE_THRESHOLD} (face nearest the image centre taken); where that also found none, "
    "the ArcFace template landmarks, scaled by 1.12 and offset by (61, 56) px (the median LFW "
    "face placement), were used to align the image centre"
)


@dataclass
class _Timings:
    """Accumulated seconds per stage."""

    detect: float = 0.0
    retry: float = 0.0
    align: float = 0.0
    embed: float = 0.0


@dataclass
class _Encoded:
    """Embeddings of the benchmark's images and how their faces were found."""

    embeddings: NDArray[np.float32]
    sources: dict[Path, FaceSource]
    timings: _Timings = field(default_factory=_Timings)


def select_pairs(
    pairs: list[Pair], folds: int, max_pairs_per_fold: int | None = None
) -> list[Pair]:
    """The pairs of folds ``0..folds-1``, optionally cut to ``max_pairs_per_fold`` per fold.

    A cut fold keeps its first ``ceil(max/2)`` same-person and first ``floor(max/2)``
    different-person pairs, so both kinds stay present.

    Raises:
        ValueError: when ``folds`` < 2 or ``max_pairs_per_fold`` < 2.
    """
    if folds < 2:
        raise ValueError(
            f"folds must be at least 2 (thresholds are fitted on other folds), got {folds}"
        )
    if max_pairs_per_fold is not None and max_pairs_per_fold < 2:
        raise ValueError(f"max_pairs_per_fold must be at least 2, got {max_pairs_per_fold}")
    chosen = [pair for pair in pairs if pair.fold < folds]
    if max_pairs_per_fold is None:
        return chosen
    quota = {True: (max_pairs_per_fold + 1) // 2, False: max_pairs_per_fold // 2}
    taken: Counter[tuple[int, bool]] = Counter()
    kept = []
    for pair in chosen:
        if taken[pair.fold, pair.same] < quota[pair.same]:
            taken[pair.fold, pair.same] += 1
            kept.append(pair)
    return kept


def run_lfw_benchmark(
    pipeline: FacePipeline,
    folds: int = 10,
    progress: ProgressCallback | None = None,
    home: Path | None = None,
    max_pairs_per_fold: int | None = None,
) -> dict[str, Any]:
    """Run LFW View 2 verification and return the result as a JSON-ready dict.

    Args:
        pipeline: the pipeline under test, used with its own settings (flip, torch threads).
        folds: how many of the 10 View 2 folds to use, 2..10 (folds 0..folds-1).
        progress: called with (images done, images in total) after every image.
        home: the shared data folder; None finds it as ``loyalnet.assets.data_home()`` does.
        max_pairs_per_fold: keep only this many pairs per fold (half same, half different), for
            quick checks; None runs the full protocol (600 pairs per fold).

    Returns:
        ``accuracy_mean``/``accuracy_std``/``accuracy_per_fold`` (fractions in [0, 1]),
        ``tar_at_far_1e-3``/``tar_at_far_1e-2`` (fractions), ``detect_ms_per_image`` (the pass at
        the default threshold), ``retry_ms_per_retried_image``, ``align_ms_per_face``,
        ``embed_ms_per_face`` (milliseconds of wall time), counts ``images``, ``pairs``,
        ``folds``, the ``no_face`` handling, and ``model_version``, ``flip``, ``threads``.

    Raises:
        AssetError: the LFW data is missing or incomplete.
        ValueError: ``folds`` outside 2..10 or a too small ``max_pairs_per_fold``.
    """
    all_pairs = lfw_pairs(home)
    fold_count = max(pair.fold for pair in all_pairs) + 1
    if folds > fold_count:
        raise ValueError(f"folds must be at most {fold_count}, got {folds}")
    pairs = select_pairs(all_pairs, folds, max_pairs_per_fold)
    images = list(dict.fromkeys(path for pair in pairs for path in (pair.left, pair.right)))
    started = time.perf_counter()
    encoded = _encode_images(pipeline, images, progress)
    row = {path: index for index, path in enumerate(images)}
    left = encoded.embeddings[[row[pair.left] for pair in pairs]]
    right = encoded.embeddings[[row[pair.right] for pair in pairs]]
    # Embeddings are unit length, so the row-wise dot product is the cosine similarity.
    scores = np.einsum("ij,ij->i", left.astype(np.float64), right.astype(np.float64))
    same = np.array([pair.same for pair in pairs])
    fold_of = np.array([pair.fold for pair in pairs])
    mean, std, per_fold = kfold_accuracy(scores, same, fold_of)
    return _result(
        pipeline,
        encoded,
        images,
        pairs,
        folds=folds,
        accuracy=(mean, std, per_fold),
        tar={far: tar_at_far(scores, same, far) for far in (1e-3, 1e-2)},
        seconds=time.perf_counter() - started,
        max_pairs_per_fold=max_pairs_per_fold,
    )


def _encode_images(
    pipeline: FacePipeline, images: list[Path], progress: ProgressCallback | None
) -> _Encoded:
    chooser = FaceChooser(pipeline)
    timings = _Timings()
    sources: dict[Path, FaceSource] = {}
    chunks: list[NDArray[np.float32]] = []
    pending: list[NDArray[np.uint8]] = []

    def flush() -> None:
        if pending:
            tick = time.perf_counter()
            chunks.append(pipeline.embed(np.stack(pending)))
            timings.embed += time.perf_counter() - tick
            pending.clear()

    if progress is not None:
        progress(0, len(images))
    for done, path in enumerate(images, start=1):
        pixels = load_image(path)
        tick = time.perf_counter()
        faces = pipeline.detect(pixels)
        timings.detect += time.perf_counter() - tick
        tick = time.perf_counter()
        chosen = chooser.choose(pixels, faces)
        if not faces:
            timings.retry += time.perf_counter() - tick
        sources[path] = chosen.source
        tick = time.perf_counter()
        pending.append(pipeline.align(pixels, [chosen.face])[0])
        timings.align += time.perf_counter() - tick
        if len(pending) == EMBED_BATCH:
            flush()
        if progress is not None:
            progress(done, len(images))
    flush()
    return _Encoded(np.concatenate(chunks), sources, timings)


def _result(
    pipeline: FacePipeline,
    encoded: _Encoded,
    images: list[Path],
    pairs: list[Pair],
    *,
    folds: int,
    accuracy: tuple[float, float, list[float]],
    tar: dict[float, float],
    seconds: float,
    max_pairs_per_fold: int | None,
) -> dict[str, Any]:
    mean, std, per_fold = accuracy
    count = Counter(encoded.sources.values())
    retried = count[FaceSource.LOW_THRESHOLD] + count[FaceSource.CENTRE_FALLBACK]
    timings = encoded.timings

    def names(source: FaceSource) -> list[str]:
        return [p.name for p, how in encoded.sources.items() if how is source]

    return {
        "benchmark": "LFW View 2 verification (deep-funneled images)",
        "accuracy_mean": round(mean, 6),
        "accuracy_std": round(std, 6),
        "accuracy_per_fold": [round(a, 6) for a in per_fold],
        "tar_at_far_1e-3": round(tar[1e-3], 6),
        "tar_at_far_1e-2": round(tar[1e-2], 6),
        "detect_ms_per_image": _ms(timings.detect, len(images)),
        "retry_ms_per_retried_image": _ms(timings.retry, retried),
        "align_ms_per_face": _ms(timings.align, len(images)),
        "embed_ms_per_face": _ms(timings.embed, len(images)),
        "images": len(images),
        "pairs": len(pairs),
        "pairs_same": sum(pair.same for pair in pairs),
        "folds": folds,
        "max_pairs_per_fold": max_pairs_per_fold,
        "no_face": {
            "count": retried,
            "recovered_low_threshold": count[FaceSource.LOW_THRESHOLD],
            "centre_fallback": count[FaceSource.CENTRE_FALLBACK],
            "low_threshold": LOW_SCORE_THRESHOLD,
            "recovered_images": names(FaceSource.LOW_THRESHOLD),
            "fallback_images": names(FaceSource.CENTRE_FALLBACK),
            "handling": NO_FACE_HANDLING,
        },
        "face_choice": "the detection whose box centre is nearest the image centre",
        "score": "cosine similarity of the two embeddings",
        "detector_score_threshold": pipeline.detector.score_threshold,
        "model_version": pipeline.model_version,
        "flip": pipeline.embedder.flip,
        "threads": torch.get_num_threads(),
        "seconds_total": round(seconds, 1),
    }


def _ms(seconds: float, count: int) -> float:
    """Milliseconds per item, 0.0 when there were no items."""
    return round(1000.0 * seconds / count, 3) if count else 0.0
