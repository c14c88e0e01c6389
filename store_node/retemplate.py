"""Adopting a new model for recognition: re-template every member the store can, flag the rest.

Training rounds never change what a store recognises with. A new (global) model becomes the
store's recognition model only through :func:`adopt_model`, which

0. checks the model before anything else (``store_node.model_check``): exactly the names and
   shapes of the store's own MobileFaceNet, floating dtype, finite values, BatchNorm running
   variances >= 0; with the coordinator's manifest, the tensors' sha256 and their names and
   shapes; and, when the store holds the chain's model-signing public key, the manifest's
   Ed25519 signature (then a model without a validly signed manifest is refused). A refused
   model changes nothing but the audit trail, which records the refusal (``model_refused``);
1. embeds, with the new model, the stored enrolment crops of every member whose consent in
   force includes both recognition and model improvement (the crops exist only under the
   latter), giving each as many new templates as they have crops;
2. saves the weights in the store folder, ``models/<model_version>.pt`` (mode 0600), and
   records their sha256 in the gallery;
3. in one SQLite transaction, writes the new templates (each names the new model version),
   deletes those members' templates of versions older than the previous recognition model
   (one generation is kept, so the store can switch back without its crops), and makes the new
   model the store's recognition model (store meta ``recognition_model``).

Members without usable crops (recognition-only consent, or a lapsed consent to model
improvement) cannot be re-templated: no face of theirs is kept to embed. They keep their
old-model templates, untouched, and are listed in ``AdoptionReport.needs_reenrolment``; as the
store searches only with the version it recognises with (templates of different models are
never compared), they are not recognised until they enrol again (a photo at the till). We chose
this over keeping the old model running beside the new one: a second embedder would double the
cost of every face seen and need two thresholds calibrated and kept consistent, for a gap that
each member closes with one photo. ``members_needing_reenrolment`` gives the current list at
any time; it is derived from the templates, so it needs no extra state and empties by itself as
members re-enrol.

:func:`recognition_pipeline` builds the ``FacePipeline`` of the store's recognition model:
the pretrained shared weights until a model is adopted, then the adopted weights, checked
against their recorded sha256 and against the store's architecture (``check_backbone``) on
every load. After an adoption the decision threshold needs impostor scores of the new model:
run ``loyalnet store calibrate``.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from loyalnet.errors import LoyalnetError
from store_node.config import StorePaths, read_config
from store_node.face import FacePipeline
from store_node.face.embedder import DEFAULT_FLIP, FaceEmbedder
from store_node.face.mobilefacenet import MobileFaceNet
from store_node.face.weights import (
    MOBILEFACENET_VERSION,
    EmbedderBackend,
    load_mobilefacenet,
    prepare_embedder,
)
from store_node.gallery import Gallery, Purpose
from store_node.gallery.inputs import resolve_now
from store_node.gallery.recognition_model import (
    RecognitionModel,
    recognition_model,
    switch_recognition_model,
)
from store_node.gallery.records import AuditAction
from store_node.gallery.training_data import training_examples
from store_node.model_check import ModelCheckError, ModelProvenance, check_backbone, check_model
from store_node.training.backbone import backbone_state, load_backbone, state_digest

MODELS_FOLDER = "models"
_VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class AdoptionError(LoyalnetError):
    """A model that cannot become, or be loaded as, the store's recognition model."""


@dataclass(frozen=True)
class AdoptionReport:
    """What ``adopt_model`` did.

    Attributes:
        model_version: the store's recognition model from now on.
        previous_version: the one it replaced (its templates are kept one generation).
        weights_file: where the weights are, or None for the pretrained shared weights.
        retemplated: members whose templates were recomputed from their crops, sorted.
        templates_added: new-version templates written.
        templates_removed: templates deleted (versions older than ``previous_version``).
        needs_reenrolment: members with recognition consent in force but no template of the
            new version, sorted: not recognised until they enrol again.
        provenance: what was checked about the model before adopting it (signature or not).
    """

    model_version: str
    previous_version: str
    weights_file: Path | None
    retemplated: tuple[str, ...]
    templates_added: int
    templates_removed: int
    needs_reenrolment: tuple[str, ...]
    provenance: ModelProvenance


def adopt_model(
    store_dir: Path,
    backbone: Mapping[str, torch.Tensor],
    model_version: str,
    *,
    manifest: Mapping[str, object] | None = None,
    now: datetime | None = None,
    home: Path | None = None,
) -> AdoptionReport:
    """Make ``backbone`` the store's recognition model and re-template every member it can.

    Safe to repeat: adopting the same model again recomputes the same templates in place.

    Args:
        store_dir: the store folder.
        backbone: a ``backbone_state`` (e.g. the global model after the last round).
        model_version: its name, letters, digits, ``.``, ``_`` and ``-``, e.g.
            ``fine_tuned_version(backbone)``; the pretrained version switches back to the
            shared weights (and must be given those weights).
        manifest: the coordinator's manifest of the model version (parsed
            ``model-vNNNN.json``, e.g. ``ReceivedModel.manifest``); required, and its
            signature checked, when the store holds the chain's model-signing key. Not needed
            to switch back to the pretrained version, whose weights are pinned by sha256.
        now: the instant consent is judged at; None is now.
        home: the shared data folder (detector and pretrained weights); None finds it.

    Raises:
        AdoptionError: a malformed version, a version already naming other weights, or the
            pretrained version with weights that are not the pretrained ones.
        ModelCheckError: the model failed the store's checks (see the module docstring).

    A refusal (either error) changes nothing but the audit trail, which records it.
    """
    paths = StorePaths(Path(store_dir))
    now = resolve_now(now)
    try:
        checked = _checked_model(paths, backbone, model_version, manifest, home)
    except (ModelCheckError, AdoptionError) as error:
        _audit_refusal(paths, model_version, error, now)
        raise
    network, digest, weights_file = checked.network, checked.digest, checked.weights_file
    with Gallery.open(paths.database, paths.key) as gallery:
        current = recognition_model(gallery)
        previous = current.model_version if current else MOBILEFACENET_VERSION
        if current and current.model_version == model_version:
            if current.sha256 != digest:
                raise AdoptionError(
                    f"model version {model_version} already names other weights in this "
                    "store; give the new model its own version, e.g. "
                    "fine_tuned_version(backbone)."
                )
            # A repeated adoption keeps the generation the first one kept.
            previous = current.previous_version
        templates = _new_templates(gallery, network, model_version, _store_flip(paths), now)
        if weights_file is not None:
            _write_weights(weights_file, backbone_state(network))
        record = RecognitionModel(
            model_version=model_version,
            weights_file="" if weights_file is None else f"{MODELS_FOLDER}/{weights_file.name}",
            sha256=digest,
            adopted_at=now,
            previous_version=previous,
        )
        counts = switch_recognition_model(gallery, record, templates, now)
        needs = members_needing_reenrolment(gallery, model_version, now)
    return AdoptionReport(
        model_version=model_version,
        previous_version=previous,
        weights_file=weights_file,
        retemplated=counts.members,
        templates_added=counts.templates_added,
        templates_removed=counts.templates_removed,
        needs_reenrolment=tuple(needs),
        provenance=checked.provenance,
    )


@dataclass(frozen=True)
class _CheckedModel:
    """A model that passed every check before an adoption.

    Attributes:
        network: MobileFaceNet holding it, in eval mode.
        digest: ``state_digest`` of its tensors (what the gallery records).
        provenance: what was checked.
        weights_file: where the store will keep it; None for the pretrained weights.
    """

    network: MobileFaceNet
    digest: str
    provenance: ModelProvenance
    weights_file: Path | None


def _checked_model(
    paths: StorePaths,
    backbone: Mapping[str, torch.Tensor],
    model_version: str,
    manifest: Mapping[str, object] | None,
    home: Path | None,
) -> _CheckedModel:
    """Every check before an adoption writes anything, so a refusal leaves the store as it was."""
    if not _VERSION_PATTERN.fullmatch(model_version):
        raise AdoptionError(
            f"model version {model_version!r} must be 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, e.g. fine_tuned_version(backbone)."
        )
    if model_version == MOBILEFACENET_VERSION and manifest is None:
        check_backbone(backbone)
        provenance = ModelProvenance(
            None, None, "the pretrained weights, checked against their pinned sha256"
        )
    else:
        provenance = check_model(paths.root, backbone, manifest)
    network = load_backbone(backbone)
    digest = state_digest(backbone_state(network))
    if model_version == MOBILEFACENET_VERSION:
        if digest != state_digest(backbone_state(load_mobilefacenet(home))):
            raise AdoptionError(
                f"{MOBILEFACENET_VERSION} names the pretrained weights, and these differ; "
                "name a fine-tuned model with fine_tuned_version(backbone)."
            )
        return _CheckedModel(network, digest, provenance, None)
    weights_file = paths.root / MODELS_FOLDER / f"{model_version}.pt"
    if weights_file.is_file() and state_digest(_load_state(weights_file)) != digest:
        raise AdoptionError(
            f"model version {model_version} already names other weights in this store "
            f"({weights_file}); give the new model its own version, e.g. "
            "fine_tuned_version(backbone)."
        )
    return _CheckedModel(network, digest, provenance, weights_file)


def _audit_refusal(
    paths: StorePaths, model_version: str, error: LoyalnetError, now: datetime
) -> None:
    """Record in the gallery's audit trail that a model was refused, and why.

    The record names no member; its details are the version and the reason. If the gallery
    cannot be opened, the refusal still stands and the reason is added to the error.
    """
    details = {"model_version": model_version[:128], "reason": str(error)[:500]}
    try:
        with Gallery.open(paths.database, paths.key) as gallery:
            gallery.record_store_event(AuditAction.MODEL_REFUSED, details, now)
    except LoyalnetError as audit_error:
        error.add_note(f"The refusal could not be audited: {audit_error}")


def recognition_version(store_dir: Path) -> str:
    """The model version the store recognises with (the pretrained one until an adoption)."""
    paths = StorePaths(Path(store_dir))
    with Gallery.open(paths.database, paths.key) as gallery:
        current = recognition_model(gallery)
    return current.model_version if current else MOBILEFACENET_VERSION


def recognition_pipeline(
    store_dir: Path,
    home: Path | None = None,
    *,
    threads: int | None = None,
    backend: EmbedderBackend = "torch",
) -> FacePipeline:
    """The face pipeline of the store's recognition model; its ``model_version`` names it.

    Args:
        store_dir: the store folder.
        home, threads, backend: as for ``FacePipeline.load``; ``flip`` is the store's setting
            (``store.toml``), the one its templates were computed with.

    Raises:
        AdoptionError: the adopted weight file is missing or does not match its digest.
        ModelCheckError: the adopted weights no longer fit the store's MobileFaceNet.
        GalleryError: the gallery cannot be opened.
    """
    paths = StorePaths(Path(store_dir))
    flip = _store_flip(paths)
    with Gallery.open(paths.database, paths.key) as gallery:
        current = recognition_model(gallery)
    if current is None or not current.weights_file:
        return FacePipeline.load(home, flip=flip, threads=threads, backend=backend)
    network = load_backbone(_read_weights(paths.root / current.weights_file, current.sha256))
    return FacePipeline.with_embedder(
        network, current.model_version, home, flip=flip, threads=threads, backend=backend
    )


def members_needing_reenrolment(
    gallery: Gallery, model_version: str, now: datetime | None = None
) -> list[str]:
    """Sorted ids of members with recognition consent in force and no ``model_version`` template."""
    return [
        summary.member_id
        for summary in gallery.members(now)
        if Purpose.RECOGNITION in summary.purposes and model_version not in summary.model_versions
    ]


def _new_templates(
    gallery: Gallery, network: MobileFaceNet, model_version: str, flip: bool, now: datetime
) -> dict[str, NDArray[np.float32]]:
    """member -> (K, 128) templates of the new model, one per stored crop, for every member
    whose consent in force allows both recognition and the use of their crops."""
    data = training_examples(gallery, now)
    recognisable = {
        summary.member_id
        for summary in gallery.members(now)
        if Purpose.RECOGNITION in summary.purposes
    }
    keep = np.array([data.member_ids[label] in recognisable for label in data.labels], dtype=bool)
    if not keep.any():
        return {}
    embedder = FaceEmbedder(prepare_embedder(network), model_version=model_version, flip=flip)
    embeddings = embedder.embed(data.crops[keep])
    grouped: dict[str, list[NDArray[np.float32]]] = defaultdict(list)
    for label, vector in zip(data.labels[keep], embeddings, strict=True):
        grouped[data.member_ids[int(label)]].append(vector)
    return {member: np.stack(vectors) for member, vectors in grouped.items()}


def _store_flip(paths: StorePaths) -> bool:
    """The store's flip setting: templates and probes must be embedded alike."""
    return read_config(paths).flip if paths.config.is_file() else DEFAULT_FLIP


def _write_weights(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    """Write the weights atomically (temporary file, then rename), mode 0600."""
    path.parent.mkdir(mode=0o700, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            torch.save(dict(state), file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise AdoptionError(
            f"cannot write the model weights {path} ({error.strerror}); check that the store "
            "folder is writable and has space."
        ) from error
    finally:
        temporary.unlink(missing_ok=True)


def _read_weights(path: Path, digest: str) -> dict[str, torch.Tensor]:
    state = _load_state(path)
    if state_digest(state) != digest:
        raise AdoptionError(
            f"the model weights {path} do not match the digest the store recorded; restore "
            "the file from backup, or adopt the model again."
        )
    return state


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as error:
        raise AdoptionError(
            f"cannot read the model weights {path} ({error}); restore the file from backup, "
            "or adopt the model again."
        ) from error
    if not isinstance(state, dict):
        raise AdoptionError(f"{path} holds no weight tensors; adopt the model again.")
    return state
