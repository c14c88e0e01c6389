"""The model versions the coordinator can hand out: files in ``<coordinator>/models``, indexed.

Training runs write each global model as ``model-vNNNN.pt`` plus its signed manifest
(``coordinator.model_versions``). :func:`import_model_versions` enters the ones the registry
does not know yet, with whether the manifest's signature verifies under the chain's
model-signing key and the file matches the manifest's sha256; only such versions can be
promoted. Stores check all of it again before adopting: the coordinator's word is not enough.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from coordinator.errors import ModelVersionError
from coordinator.model_versions import ModelVersion, list_model_versions, read_manifest
from coordinator.registry import ModelVersionRecord, Registry
from loyalnet.assets import sha256_of
from loyalnet.model_signing import ModelSignatureError, key_id, verify_manifest

log = logging.getLogger(__name__)


class ModelFiles:
    """The weights files of the registry's model versions, checked before they are served."""

    def __init__(self, folder: Path, registry: Registry) -> None:
        self.folder = folder
        self._registry = registry

    def weights_file(self, version: int) -> Path | None:
        """The file of ``version``, or None when the registry has no such version."""
        record = self._registry.get_model_version(version) if version > 0 else None
        if record is None:
            return None
        path = self.folder / record.file_name
        return path if path.is_file() else None

    def intact(self, record: ModelVersionRecord) -> bool:
        """True when the file on disk still has the sha256 the registry (and manifest) hold."""
        path = self.folder / record.file_name
        return path.is_file() and sha256_of(path) == record.sha256


def import_model_versions(
    registry: Registry,
    folder: Path,
    public_key: Ed25519PublicKey | None,
    run_id: int | None = None,
) -> list[int]:
    """Enter every model version in ``folder`` the registry lacks; return the versions added.

    Args:
        public_key: the chain's model-signing public key; None marks every version unverified.
        run_id: the training run that made the new versions, when known; otherwise a version
            is tied to the run its manifest's run config names (``registry-run-id``), if the
            registry has it. So whichever import comes first, the periodic scan or the run's
            own, the version keeps its run.
    """
    known = {record.version for record in registry.list_model_versions()}
    added: list[int] = []
    for saved in list_model_versions(folder):
        if saved.version in known:
            continue
        try:
            manifest = read_manifest(saved)
        except ModelVersionError as err:
            log.warning("model version %d skipped: %s", saved.version, err)
            continue
        verified, signer = _verified(saved, manifest, public_key)
        registry.add_model_version(
            version=saved.version,
            sha256=saved.sha256,
            size_bytes=saved.path.stat().st_size if saved.path.is_file() else 0,
            file_name=saved.path.name,
            manifest_json=saved.manifest_path.read_text(encoding="utf-8"),
            signature_verified=verified,
            signing_key_id=signer or None,
            created_at=saved.created_at,
            run_id=run_id or _run_of(registry, manifest),
        )
        added.append(saved.version)
    return added


def _run_of(registry: Registry, manifest: dict[str, object]) -> int | None:
    """The registry run the manifest's run config names, if there is such a run."""
    run_config = manifest.get("run_config")
    named = run_config.get("registry-run-id") if isinstance(run_config, dict) else None
    if not isinstance(named, int) or isinstance(named, bool) or named <= 0:
        return None
    return named if registry.get_run(named) is not None else None


def _verified(
    saved: ModelVersion, manifest: dict[str, object], public_key: Ed25519PublicKey | None
) -> tuple[bool, str]:
    if public_key is None:
        return False, ""
    try:
        verify_manifest(manifest, public_key)
    except ModelSignatureError as err:
        log.warning("model version %d: %s", saved.version, err)
        return False, ""
    if not saved.path.is_file() or sha256_of(saved.path) != saved.sha256:
        log.warning("model version %d: %s does not match its manifest", saved.version, saved.path)
        return False, ""
    return True, key_id(public_key)


def last_round_metrics(manifest_json: str) -> dict[str, float]:
    """The numeric metrics of a manifest's last round (aggregates over stores only)."""
    try:
        rounds = json.loads(manifest_json).get("rounds", {})
        last = rounds[max(rounds, key=int)] if rounds else {}
    except (ValueError, AttributeError, TypeError):
        return {}
    return {
        key: float(value)
        for key, value in last.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def round_metrics(manifest_json: str) -> dict[int, dict[str, float]]:
    """Every round's numeric metrics from a manifest, by round number."""
    try:
        rounds = json.loads(manifest_json).get("rounds", {})
    except (ValueError, AttributeError):
        return {}
    return {
        int(number): {
            key: float(value)
            for key, value in metrics.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        for number, metrics in rounds.items()
    }
