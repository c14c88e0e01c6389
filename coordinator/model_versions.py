"""Model versions: each global model a run produces, as a file plus a JSON manifest.

A version ``n`` in a folder is two files:

- ``model-v000n.pt``: the state_dict (plain float32 tensors, ``loyalnet.model_arrays`` keys),
  written with ``torch.save``;
- ``model-v000n.json``: its manifest: the file's sha256 and size, the tensors' canonical
  digest (``state_sha256``) and their names, dtypes and shapes (``arrays``), when it was made,
  the run config that made it and the per-round training metrics (aggregates over stores
  only), signed with the chain's model-signing key when the coordinator has one
  (``loyalnet.model_signing``): stores holding the public key adopt nothing unsigned.

The ``.pt`` file is linked into place under its final name only if that name is free, which
claims the version number even when two coordinators write into one folder; the manifest is
written last (to a temporary name, then renamed), so a version counts once its manifest exists.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.errors import ModelVersionError
from loyalnet import __version__
from loyalnet.assets import sha256_of
from loyalnet.model_digest import array_list, state_digest
from loyalnet.model_signing import sign_manifest

_NAME = re.compile(r"^model-v(\d{4,})\.json$")
MetricValue = int | float | list[int] | list[float]


@dataclass(frozen=True)
class ModelVersion:
    """One saved global model.

    Attributes:
        version: 1, 2, ... in the order they were saved to the folder.
        path: the ``.pt`` file.
        sha256: hex sha256 of that file's bytes.
        created_at: when it was saved, UTC.
    """

    version: int
    path: Path
    sha256: str
    created_at: datetime

    @property
    def manifest_path(self) -> Path:
        """The version's JSON manifest, beside the ``.pt`` file."""
        return self.path.with_suffix(".json")


def save_model_version(
    folder: Path,
    state_dict: Mapping[str, torch.Tensor],
    run_config: Mapping[str, bool | int | float | str],
    per_round_metrics: Mapping[int, Mapping[str, MetricValue]],
    *,
    signing_key: Ed25519PrivateKey | None = None,
) -> ModelVersion:
    """Save ``state_dict`` as the folder's next model version, with its manifest.

    Args:
        signing_key: the chain's model-signing key (``coordinator.pki.load_model_signing_key``);
            None writes an unsigned manifest, which only stores without the chain's public key
            adopt.

    Raises:
        ModelVersionError: the state is empty or the folder cannot be written.
    """
    if not state_dict:
        raise ModelVersionError("refusing to save an empty model; no store trained in the run.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staged = folder / f".model-{os.getpid()}-{os.urandom(4).hex()}.pt.tmp"
        state = {key: value.detach().cpu() for key, value in state_dict.items()}
        torch.save(state, staged)
        try:
            version, path = _claim(folder, staged)
        finally:
            staged.unlink(missing_ok=True)
        saved = ModelVersion(version, path, sha256_of(path), datetime.now(UTC))
        manifest: dict[str, object] = {
            "version": saved.version,
            "file": path.name,
            "sha256": saved.sha256,
            "bytes": path.stat().st_size,
            "state_sha256": state_digest(state),
            "arrays": array_list(state),
            "created_at": saved.created_at.isoformat(),
            "tensors": len(state_dict),
            "values": sum(value.numel() for value in state_dict.values()),
            "loyalnet_version": __version__,
            "run_config": dict(run_config),
            "rounds": {
                str(round_): dict(metrics) for round_, metrics in sorted(per_round_metrics.items())
            },
        }
        if signing_key is not None:
            manifest = sign_manifest(manifest, signing_key)
        _write_atomically(saved.manifest_path, json.dumps(manifest, indent=2) + "\n")
    except OSError as err:
        raise ModelVersionError(
            f"cannot write a model version into {folder} ({err}); check the folder's space "
            "and permissions."
        ) from err
    return saved


def list_model_versions(folder: Path) -> list[ModelVersion]:
    """The folder's complete versions (those with a manifest), oldest first."""
    if not folder.is_dir():
        return []
    versions = [
        _from_manifest(path) for path in folder.iterdir() if _NAME.match(path.name) is not None
    ]
    return sorted(versions, key=lambda saved: saved.version)


def load_model_version(saved: ModelVersion) -> dict[str, torch.Tensor]:
    """The version's tensors, after checking the file against the manifest's sha256.

    Raises:
        ModelVersionError: the file is missing, altered, or not a state_dict of tensors.
    """
    if not saved.path.is_file():
        raise ModelVersionError(f"model version {saved.version}: {saved.path} is missing.")
    actual = sha256_of(saved.path)
    if actual != saved.sha256:
        raise ModelVersionError(
            f"model version {saved.version}: {saved.path} has sha256 {actual[:12]}…, its "
            f"manifest says {saved.sha256[:12]}…; the file was altered, restore it."
        )
    state = torch.load(saved.path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelVersionError(f"{saved.path} does not hold a state_dict of tensors.")
    return {str(key): value for key, value in state.items()}


def read_manifest(saved: ModelVersion) -> dict[str, object]:
    """The version's manifest as written (signature included), for handing to a store.

    Raises:
        ModelVersionError: the manifest is unreadable.
    """
    try:
        manifest = json.loads(saved.manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelVersionError(
            f"model manifest {saved.manifest_path} is unreadable ({err}); restore it."
        ) from err
    if not isinstance(manifest, dict):
        raise ModelVersionError(f"model manifest {saved.manifest_path} is not a JSON object.")
    return manifest


def _claim(folder: Path, staged: Path) -> tuple[int, Path]:
    """Link ``staged`` to the first free ``model-vNNNN.pt`` and return (version, path)."""
    version = max((saved.version for saved in list_model_versions(folder)), default=0) + 1
    while True:
        path = folder / f"model-v{version:04d}.pt"
        try:
            # A hard link fails if the name exists: an atomic claim of the version number.
            os.link(staged, path)
        except FileExistsError:
            version += 1
            continue
        return version, path


def _from_manifest(path: Path) -> ModelVersion:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        return ModelVersion(
            version=int(manifest["version"]),
            path=path.with_name(str(manifest["file"])),
            sha256=str(manifest["sha256"]),
            created_at=datetime.fromisoformat(str(manifest["created_at"])),
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelVersionError(
            f"model manifest {path} is unreadable ({err}); restore it or move it away."
        ) from err


def _write_atomically(path: Path, text: str) -> None:
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staged.write_text(text, encoding="utf-8")
    os.replace(staged, path)
