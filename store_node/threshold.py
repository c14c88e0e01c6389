"""The decision threshold of a store: calibrated from impostor scores, sized to the gallery.

A probe from a stranger is compared with every template of the gallery, so the chance that at
least one comparison clears the threshold grows with the gallery. The store keeps a target
false-positive identification rate (FPIR) and derives the threshold for its current number of
templates from a sample of impostor scores of the current model (see
``store_node.gallery.calibration`` for the math).

Where the impostor scores come from, in order:
1. the store's own calibration (``loyalnet store calibrate``), when it was made with the model
   the store recognises with;
2. the default shipped with loyalnet for that model (``store_node/calibration/<model>.json``),
   measured on LFW people with a single photo, i.e. people no store enrols.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from loyalnet.errors import LoyalnetError
from store_node.datasets.lfw import lfw_people
from store_node.face import FacePipeline, ImageError, load_image
from store_node.gallery import Gallery, ImpostorScores, Threshold, impostor_scores_from_embeddings
from store_node.gallery.calibration import threshold_for_fpir

DEFAULT_CALIBRATION_PEOPLE = 1500


def default_impostor_scores(model_version: str) -> ImpostorScores:
    """The impostor scores shipped for ``model_version``.

    Raises:
        LoyalnetError: when loyalnet ships none for that model.
    """
    resource = resources.files("store_node.calibration").joinpath(f"{model_version}.json")
    if not resource.is_file():
        raise LoyalnetError(
            f"no default calibration for model {model_version}; "
            "run `loyalnet store calibrate` to measure one."
        )
    return ImpostorScores.from_json(resource.read_text(encoding="utf-8"))


def decision_threshold(gallery: Gallery, model_version: str, target_fpir: float) -> Threshold:
    """The threshold that keeps this gallery's FPIR at ``target_fpir``."""
    calibrated = gallery.calibration()
    if calibrated is not None and calibrated[0].model_version == model_version:
        scores = calibrated[0]
    else:
        scores = default_impostor_scores(model_version)
    comparisons = max(1, gallery.template_count(model_version))
    return threshold_for_fpir(scores, target_fpir, comparisons)


def calibration_people(
    home: Path | None = None, limit: int = DEFAULT_CALIBRATION_PEOPLE
) -> dict[str, list[Path]]:
    """Strangers for calibration: LFW people with exactly one photo, the first ``limit`` by name.

    Loyalty demos and benchmarks enrol LFW people with five or more photos, so these are
    disjoint from every member.
    """
    singles = {name: paths for name, paths in lfw_people(home).items() if len(paths) == 1}
    names = sorted(singles)[:limit]
    return {name: singles[name] for name in names}


def measure_impostor_scores(
    pipeline: FacePipeline,
    people: Mapping[str, Sequence[Path]],
    source: str,
    progress: Callable[[int, int], None] | None = None,
) -> ImpostorScores:
    """Embed every photo of ``people`` (largest face) and score all cross-person pairs.

    Photos without a face or that cannot be read are skipped.

    Raises:
        LoyalnetError: when fewer than two people give a face.
    """
    photos = [(name, path) for name, paths in people.items() for path in paths]
    embeddings: list[np.ndarray] = []
    identities: list[str] = []
    for done, (name, path) in enumerate(photos, start=1):
        try:
            encodings = pipeline.encode(load_image(path))
        except ImageError:
            encodings = []
        if encodings:
            embeddings.append(encodings[0].embedding)
            identities.append(name)
        if progress is not None:
            progress(done, len(photos))
    if len(set(identities)) < 2:
        raise LoyalnetError(
            f"calibration needs faces of at least two people; {source} gave "
            f"{len(set(identities))}. Point --people at a folder of one sub-folder per person."
        )
    return impostor_scores_from_embeddings(
        np.stack(embeddings), identities, pipeline.model_version, source
    )


def people_from_folder(folder: Path) -> dict[str, list[Path]]:
    """One person per sub-folder of ``folder`` (the LFW and ORL layout); images by extension."""
    if not folder.is_dir():
        raise LoyalnetError(
            f"{folder} is not a folder; give a folder with one sub-folder per person."
        )
    suffixes = {".jpg", ".jpeg", ".png", ".pgm", ".bmp"}
    people = {
        sub.name: sorted(p for p in sub.iterdir() if p.suffix.lower() in suffixes)
        for sub in sorted(folder.iterdir())
        if sub.is_dir()
    }
    return {name: paths for name, paths in people.items() if paths}
