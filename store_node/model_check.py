"""What a store checks before a model it received is used: it fits, it is intact, it is signed.

Two levels, both refusing with :class:`ModelCheckError`:

- :func:`check_backbone` (from :mod:`store_node.training.model_check`): the tensors fit this
  store's own MobileFaceNet (exactly its names and shapes, floating dtype, finite, BatchNorm
  running variances >= 0). Cheap; run on every training round's received model, on adoption
  and on every load of an adopted model.
- :func:`check_model`: before an adoption, additionally the model's manifest from the
  coordinator (``coordinator.model_versions``): the tensors' canonical sha256 and their names
  and shapes must be the manifest's, and, when the store holds the chain's model-signing public
  key, the manifest's Ed25519 signature must verify under it (``loyalnet.model_signing``).

"Where the chain has one": a store folder holding ``model-signing.pub`` (copied in by
``loyalnet store join``) refuses a model without a manifest, with an unsigned manifest, or with
a signature by another key or over other contents. A store without the key (it joined before
the chain signed models, or never joined) cannot tell the coordinator's models from anyone
else's: it checks the hash, names, shapes and values only, and :class:`ModelProvenance` says
so, for the adoption report and the command line to show.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from loyalnet.assets import sha256_of
from loyalnet.model_digest import array_list, state_digest
from loyalnet.model_signing import (
    MODEL_SIGNING_PUBLIC_KEY,
    ModelSignatureError,
    key_id,
    parse_public_key,
    read_public_key,
    verify_manifest,
)
from store_node.training.model_check import ModelCheckError, check_backbone

__all__ = [
    "ModelCheckError",
    "ModelProvenance",
    "ReceivedModel",
    "check_backbone",
    "check_model",
    "install_model_signing_key",
    "model_signing_key_file",
    "read_model_file",
    "store_signing_key",
]


@dataclass(frozen=True)
class ModelProvenance:
    """What a store established about a model before adopting it.

    Attributes:
        signed_by: the key id (``loyalnet.model_signing.key_id``) of the chain key the manifest
            verified under; None when no signature was checked.
        coordinator_version: the manifest's model version number; None without a manifest.
        summary: one line for people: what was checked, and what could not be.
    """

    signed_by: str | None
    coordinator_version: int | None
    summary: str


@dataclass(frozen=True)
class ReceivedModel:
    """A model version read from the coordinator's files: its tensors and its manifest."""

    state: dict[str, torch.Tensor]
    manifest: dict[str, object]


def model_signing_key_file(store_dir: Path) -> Path:
    """Where a store keeps the chain's model-signing public key."""
    return Path(store_dir) / MODEL_SIGNING_PUBLIC_KEY


def store_signing_key(store_dir: Path) -> Ed25519PublicKey | None:
    """The chain's model-signing public key this store holds, or None when it holds none.

    Raises:
        ModelCheckError: the key file exists but is unreadable or not an Ed25519 public key; a
            store that was given a key never falls back to adopting unsigned models.
    """
    path = model_signing_key_file(store_dir)
    if not path.exists():
        return None
    try:
        return read_public_key(path)
    except ModelSignatureError as err:
        raise ModelCheckError(
            f"{err} The store adopts no model until {path} is restored "
            "(`loyalnet store join --model-key`)."
        ) from err


def install_model_signing_key(store_dir: Path, data: bytes, source: str) -> tuple[Path, str]:
    """Keep the chain's model-signing public key ``data`` (PEM) in the store folder.

    Returns:
        the kept file and the key's id.

    Raises:
        ModelSignatureError: ``data`` is not an Ed25519 public key.
    """
    key = parse_public_key(data, source)
    path = model_signing_key_file(store_dir)
    path.write_bytes(data)
    return path, key_id(key)


def check_model(
    store_dir: Path,
    state: Mapping[str, torch.Tensor],
    manifest: Mapping[str, object] | None,
) -> ModelProvenance:
    """Check ``state`` (and its coordinator ``manifest``) before the store adopts it.

    Args:
        store_dir: the store folder (its ``model-signing.pub``, if any, decides whether a
            signature is required).
        state: the received backbone tensors.
        manifest: the model version's manifest as the coordinator wrote it (the parsed
            ``model-vNNNN.json``), or None when the model came without one (e.g. trained
            locally); a store holding the chain's key refuses the latter.

    Returns:
        What was checked.

    Raises:
        ModelCheckError: the model does not fit the store, does not match its manifest, or
            lacks a valid signature where the store holds the chain's key.
    """
    check_backbone(state)
    key = store_signing_key(store_dir)
    if manifest is None:
        if key is not None:
            raise ModelCheckError(
                f"this store holds the chain's model-signing key ({key_id(key)}) and adopts "
                "only models that come with a signed manifest; pass the model version's "
                "manifest (model-vNNNN.json beside its .pt file) with the weights."
            )
        return ModelProvenance(
            None,
            None,
            "names, shapes, dtypes and values checked; no manifest, so no hash or signature "
            "to check against (this store holds no model-signing key)",
        )
    signer = None
    if key is not None:
        try:
            signer = verify_manifest(manifest, key)
        except ModelSignatureError as err:
            raise ModelCheckError(str(err)) from err
    _check_against_manifest(state, manifest)
    version = manifest.get("version")
    number = version if isinstance(version, int) else None
    if signer is None:
        return ModelProvenance(
            None,
            number,
            "weights match the manifest's sha256, names and shapes; signature NOT checked: "
            "this store holds no model-signing key (`loyalnet store join --model-key`)",
        )
    return ModelProvenance(
        signer,
        number,
        f"manifest signed by the chain's model-signing key {signer}; weights match its "
        "sha256, names and shapes",
    )


def read_model_file(path: Path) -> ReceivedModel:
    """Read a coordinator model version: ``path`` (``model-vNNNN.pt``) and its manifest beside it.

    The file's bytes are checked against the manifest's ``sha256`` before torch reads them
    (and torch reads tensors only, never code), so an altered file is refused early.

    Raises:
        ModelCheckError: the manifest is missing or unreadable, the file does not match its
            sha256, or holds no tensors.
    """
    manifest_path = path.with_suffix(".json")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelCheckError(
            f"cannot read the model's manifest {manifest_path} ({err}); copy it from the "
            "coordinator's models/ folder together with the .pt file."
        ) from err
    if not isinstance(manifest, dict):
        raise ModelCheckError(f"{manifest_path} is not a model manifest (no JSON object).")
    try:
        actual = sha256_of(path)
    except OSError as err:
        raise ModelCheckError(f"cannot read the model file {path}: {err}.") from err
    if actual != manifest.get("sha256"):
        raise ModelCheckError(
            f"{path} has sha256 {actual[:12]}…, its manifest says "
            f"{str(manifest.get('sha256'))[:12]}…: the file was altered or belongs to another "
            "manifest; copy both again from the coordinator's models/ folder."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError) as err:
        raise ModelCheckError(f"{path} holds no readable tensors ({err}).") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelCheckError(f"{path} does not hold a state_dict of tensors.")
    return ReceivedModel({str(key): value for key, value in state.items()}, manifest)


def _check_against_manifest(
    state: Mapping[str, torch.Tensor], manifest: Mapping[str, object]
) -> None:
    """The tensors are the ones the manifest describes: same names and shapes, same digest."""
    arrays = manifest.get("arrays")
    expected_digest = manifest.get("state_sha256")
    if arrays is None or expected_digest is None:
        raise ModelCheckError(
            "the model's manifest lists no arrays or state_sha256 (a coordinator older than "
            "model checks wrote it); save the model version again with this loyalnet."
        )
    if arrays != array_list(state):
        raise ModelCheckError(
            "the received tensors' names, dtypes or shapes differ from those the model's "
            "manifest lists; the weights belong to another model version, so fetch the "
            "matching .pt and manifest again."
        )
    if expected_digest != state_digest(state):
        raise ModelCheckError(
            "the received weights do not match the sha256 in the model's manifest "
            "(state_sha256): they were altered after the coordinator saved them; fetch the "
            "model version again from the chain's coordinator."
        )
