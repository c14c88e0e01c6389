"""A store adopts a model only after checking it: architecture, hash, and the chain's signature.

Real files throughout: the coordinator's TLS folder and model-signing key from
``create_coordinator_tls``, model versions written by ``save_model_version`` from the real
pretrained weights (slightly changed, standing in for a fine-tuned model), and a real store
with two enrolled LFW members whose crops are re-embedded on adoption. Every refusal must leave
the store as it was, apart from one ``model_refused`` audit record.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.model_versions import ModelVersion, read_manifest, save_model_version
from coordinator.pki import (
    CoordinatorTls,
    create_coordinator_tls,
    create_model_signing_key,
    load_model_signing_key,
)
from loyalnet.errors import LoyalnetError
from loyalnet.model_signing import (
    ModelSignatureError,
    key_id,
    read_public_key,
    sign_manifest,
    verify_manifest,
)
from store_node.config import StoreConfig, StorePaths, write_config
from store_node.enrolment import EnrolmentRequest, enrol_member
from store_node.face import FacePipeline
from store_node.face.weights import MOBILEFACENET_VERSION, load_mobilefacenet
from store_node.gallery import Gallery, Purpose
from store_node.gallery.records import AuditAction
from store_node.joining import join_federation
from store_node.model_check import (
    ModelCheckError,
    check_backbone,
    install_model_signing_key,
    model_signing_key_file,
    read_model_file,
)
from store_node.retemplate import adopt_model, recognition_version
from store_node.training import backbone_state, fine_tuned_version

MEMBERS = ("Colin_Powell", "Tony_Blair")
RUN_CONFIG: dict[str, bool | int | float | str] = {"num-rounds": 1, "strategy": "fedavg"}


@dataclass(frozen=True)
class Chain:
    """A coordinator folder with two signed model versions (a and b) of different weights."""

    tls: CoordinatorTls
    a: ModelVersion
    b: ModelVersion


def _changed(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """A stand-in for a fine-tuned model: the last layer's weights scaled."""
    return {**state, "conv3.weight": state["conv3.weight"] * scale}


@pytest.fixture(scope="module")
def pretrained() -> dict[str, torch.Tensor]:
    return backbone_state(load_mobilefacenet())


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, pretrained: dict[str, torch.Tensor]) -> Chain:
    folder = tmp_path_factory.mktemp("coordinator")
    tls = create_coordinator_tls(folder / "tls", "acme")
    key = load_model_signing_key(tls)
    assert key is not None
    models = folder / "models"
    metrics = {1: {"loss": 0.5}}
    a = save_model_version(models, _changed(pretrained, 1.01), RUN_CONFIG, metrics, signing_key=key)
    b = save_model_version(models, _changed(pretrained, 0.99), RUN_CONFIG, metrics, signing_key=key)
    return Chain(tls, a, b)


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory: pytest.TempPathFactory, lfw_images: Path) -> Path:
    root = tmp_path_factory.mktemp("enrolled") / "store"
    root.mkdir()
    paths = StorePaths(root)
    write_config(paths, StoreConfig(store_id="store-model-check"))
    pipeline = FacePipeline.load()
    consent = frozenset({Purpose.RECOGNITION, Purpose.MODEL_IMPROVEMENT})
    with Gallery.create(paths.database, paths.key) as gallery:
        for name in MEMBERS:
            photos = sorted((lfw_images / name).iterdir())[:2]
            enrol_member(gallery, pipeline, EnrolmentRequest(name, consent, "2026-11", 365), photos)
    return root


@pytest.fixture
def store(enrolled: Path, tmp_path: Path, chain: Chain) -> Path:
    """A copy of the enrolled store that holds the chain's model-signing public key."""
    copy = tmp_path / "store"
    shutil.copytree(enrolled, copy)
    public = chain.tls.model_signing_public_key
    install_model_signing_key(copy, public.read_bytes(), str(public))
    return copy


def _snapshot(store: Path) -> tuple[object, ...]:
    """Everything an adoption changes, bar the audit trail's refusal records."""
    paths = StorePaths(store)
    with Gallery.open(paths.database, paths.key) as gallery:
        members = [(m.member_id, m.templates, m.model_versions) for m in gallery.members()]
        audit = [e.action for e in gallery.audit_log() if e.action != AuditAction.MODEL_REFUSED]
    models = paths.root / "models"
    files = sorted(p.name for p in models.iterdir()) if models.exists() else []
    return recognition_version(store), members, audit, files


def _refusals(store: Path) -> list[dict[str, object]]:
    paths = StorePaths(store)
    with Gallery.open(paths.database, paths.key) as gallery:
        return [
            dict(e.details) for e in gallery.audit_log() if e.action == AuditAction.MODEL_REFUSED
        ]


# -- the architecture check -------------------------------------------------------------------


def test_check_backbone_refuses_what_does_not_fit_the_store(
    pretrained: dict[str, torch.Tensor],
) -> None:
    check_backbone(pretrained)
    check_backbone({k: v.double() for k, v in pretrained.items()})  # floating, in range
    renamed = {("conv3.w" if k == "conv3.weight" else k): v for k, v in pretrained.items()}
    cases: list[tuple[dict[str, torch.Tensor], str]] = [
        ({k: v for k, v in pretrained.items() if k != "conv3.bias"}, "1 tensor.s. missing"),
        (renamed, "unexpected \\['conv3.w'\\]"),
        ({**pretrained, "extra": torch.zeros(1)}, "unexpected \\['extra'\\]"),
        ({**pretrained, "conv3.bias": torch.zeros(3)}, "shape \\(3,\\)"),
        ({**pretrained, "conv3.bias": torch.zeros(128, dtype=torch.int64)}, "dtype torch.int64"),
        ({**pretrained, "conv3.bias": torch.full((128,), float("nan"))}, "NaN"),
        ({**pretrained, "bn.running_mean": torch.full((128,), float("inf"))}, "NaN or infinity"),
        ({**pretrained, "conv3.bias": torch.full((128,), 1e300, dtype=torch.float64)}, "NaN"),
    ]
    negative = pretrained["conv1.1.running_var"].clone()
    negative[0] = -1e-3
    cases.append(({**pretrained, "conv1.1.running_var": negative}, "negative BatchNorm"))
    for state, message in cases:
        with pytest.raises(ModelCheckError, match=message):
            check_backbone(state)


# -- the coordinator's side -------------------------------------------------------------------


def test_coordinator_signs_each_model_version_with_its_own_key(chain: Chain) -> None:
    assert chain.tls.model_signing_key.stat().st_mode & 0o777 == 0o600
    public = read_public_key(chain.tls.model_signing_public_key)
    manifest = read_manifest(chain.a)
    arrays = manifest["arrays"]
    assert isinstance(arrays, list) and len(arrays) == 256
    assert arrays[0] == ["conv1.0.weight", "float32", [64, 3, 3, 3]]
    assert isinstance(manifest["state_sha256"], str) and manifest["sha256"] == chain.a.sha256
    assert verify_manifest(manifest, public) == key_id(public)

    altered = {**manifest, "run_config": {**RUN_CONFIG, "num-rounds": 9}}
    with pytest.raises(ModelSignatureError, match="does not verify"):
        verify_manifest(altered, public)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(ModelSignatureError, match="another key"):
        verify_manifest(sign_manifest(manifest, other), public)
    with pytest.raises(ModelSignatureError, match="not signed"):
        verify_manifest({k: v for k, v in manifest.items() if k != "signature"}, public)


def test_a_chain_without_a_model_signing_key_saves_unsigned_and_cannot_be_given_two(
    chain: Chain, tmp_path: Path
) -> None:
    older = CoordinatorTls(tmp_path / "tls")  # a chain created before models were signed
    assert load_model_signing_key(older) is None
    create_model_signing_key(older)
    assert load_model_signing_key(older) is not None
    with pytest.raises(LoyalnetError, match="already holds a model-signing key"):
        create_model_signing_key(chain.tls)


# -- the store's side: joining ----------------------------------------------------------------


def test_store_join_takes_the_model_signing_key_beside_the_ca(chain: Chain, tmp_path: Path) -> None:
    paths = StorePaths(tmp_path / "shop")
    paths.root.mkdir()
    write_config(paths, StoreConfig(store_id="shop"))
    ca = chain.tls.ca_certificate

    joined = join_federation(paths, ca, "localhost:8000")
    public = read_public_key(chain.tls.model_signing_public_key)
    assert joined.model_signing_key == model_signing_key_file(paths.root)
    assert joined.model_signing_key_id == key_id(public)
    assert read_public_key(model_signing_key_file(paths.root)) == public

    # A CA certificate alone (an older chain): joining again keeps the key the store holds.
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(ca, lone / "ca.crt")
    rejoined = join_federation(paths, lone / "ca.crt", "localhost:8000")
    assert rejoined.model_signing_key_id == key_id(public)

    # A bad --model-key changes nothing in a fresh store.
    fresh = StorePaths(tmp_path / "fresh")
    fresh.root.mkdir()
    write_config(fresh, StoreConfig(store_id="fresh"))
    with pytest.raises(ModelSignatureError, match="not a PEM public key"):
        join_federation(fresh, lone / "ca.crt", "localhost:8000", model_key_file=ca)
    assert not fresh.ca_certificate.exists() and not model_signing_key_file(fresh.root).exists()
    plain = join_federation(fresh, lone / "ca.crt", "localhost:8000")
    assert plain.model_signing_key is None and plain.model_signing_key_id is None


# -- the store's side: adopting ---------------------------------------------------------------


def test_a_properly_signed_model_is_adopted(chain: Chain, store: Path) -> None:
    received = read_model_file(chain.a.path)
    version = fine_tuned_version(received.state)
    report = adopt_model(store, received.state, version, manifest=received.manifest)
    public = read_public_key(chain.tls.model_signing_public_key)
    assert report.provenance.signed_by == key_id(public)
    assert report.provenance.coordinator_version == chain.a.version
    assert "signed by the chain's model-signing key" in report.provenance.summary
    assert report.retemplated == tuple(sorted(MEMBERS)) and report.templates_added >= 2
    assert recognition_version(store) == version
    assert _refusals(store) == []


def test_switching_back_to_the_pretrained_weights_needs_no_manifest(
    chain: Chain, pretrained: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    """The pretrained weights are pinned by their sha256; no coordinator signed them."""
    paths = StorePaths(tmp_path / "empty")
    paths.root.mkdir()
    write_config(paths, StoreConfig(store_id="empty"))
    Gallery.create(paths.database, paths.key).close()
    public = chain.tls.model_signing_public_key
    install_model_signing_key(paths.root, public.read_bytes(), str(public))

    back = adopt_model(paths.root, pretrained, MOBILEFACENET_VERSION)
    assert back.provenance.signed_by is None and "pinned sha256" in back.provenance.summary
    with pytest.raises(ModelCheckError, match="signed manifest"):
        adopt_model(paths.root, _changed(pretrained, 1.01), "mobilefacenet-ft-unsigned")


Tamper = Callable[[Chain], tuple[dict[str, torch.Tensor], dict[str, object] | None]]


def _a(chain: Chain) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    received = read_model_file(chain.a.path)
    return received.state, received.manifest


def _tampered_weights(chain: Chain) -> tuple[dict[str, torch.Tensor], dict[str, object] | None]:
    state, manifest = _a(chain)
    bias = state["conv3.bias"].clone()
    bias[0] += 1e-4
    return {**state, "conv3.bias": bias}, manifest


def _renamed(chain: Chain) -> tuple[dict[str, torch.Tensor], dict[str, object] | None]:
    state, manifest = _a(chain)
    return {("conv3.w" if k == "conv3.weight" else k): v for k, v in state.items()}, manifest


def _reshaped(chain: Chain) -> tuple[dict[str, torch.Tensor], dict[str, object] | None]:
    state, manifest = _a(chain)
    return {**state, "conv3.bias": torch.zeros(127)}, manifest


def _nan(chain: Chain) -> tuple[dict[str, torch.Tensor], dict[str, object] | None]:
    state, manifest = _a(chain)
    weight = state["conv3.weight"].clone()
    weight.view(-1)[5] = float("nan")
    return {**state, "conv3.weight": weight}, manifest


def _negative_variance(chain: Chain) -> tuple[dict[str, torch.Tensor], dict[str, object] | None]:
    state, manifest = _a(chain)
    variance = state["bn.running_var"].clone()
    variance[3] = -0.5
    return {**state, "bn.running_var": variance}, manifest


def _unsigned(chain: Chain) -> tuple[dict[str, torch.Tensor], dict[str, object] | None]:
    state, manifest = _a(chain)
    return state, {k: v for k, v in manifest.items() if k != "signature"}


def _no_manifest(chain: Chain) -> tuple[dict[str, torch.Tensor], dict[str, object] | None]:
    return _a(chain)[0], None


def _other_key(chain: Chain) -> tuple[dict[str, torch.Tensor], dict[str, object] | None]:
    state, manifest = _a(chain)
    return state, sign_manifest(manifest, Ed25519PrivateKey.generate())


def _signature_of_b(chain: Chain) -> tuple[dict[str, torch.Tensor], dict[str, object] | None]:
    # The chain's own signature, but over model b's manifest: replayed onto model a.
    state, manifest = _a(chain)
    return state, {**manifest, "signature": read_manifest(chain.b)["signature"]}


def _manifest_of_b(chain: Chain) -> tuple[dict[str, torch.Tensor], dict[str, object] | None]:
    # A valid signed manifest, of another model version: the weights are a's.
    return _a(chain)[0], read_manifest(chain.b)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_tampered_weights, "do not match the sha256"),
        (_renamed, "missing \\['conv3.weight'\\]"),
        (_reshaped, "shape \\(127,\\)"),
        (_nan, "NaN"),
        (_negative_variance, "negative BatchNorm running variance"),
        (_unsigned, "not signed"),
        (_no_manifest, "only models that come with a signed manifest"),
        (_other_key, "made by another key"),
        (_signature_of_b, "over different contents"),
        (_manifest_of_b, "names, dtypes or shapes differ|do not match the sha256"),
    ],
    ids=[
        "tampered-weights",
        "wrong-names",
        "wrong-shapes",
        "nan",
        "negative-running-var",
        "unsigned",
        "no-manifest",
        "other-key",
        "signature-over-other-manifest",
        "manifest-of-other-model",
    ],
)
def test_a_model_failing_a_check_is_refused_and_the_store_unchanged(
    chain: Chain, store: Path, tamper: Tamper, message: str
) -> None:
    before = _snapshot(store)
    state, manifest = tamper(chain)
    with pytest.raises(ModelCheckError, match=message) as refused:
        adopt_model(store, state, "mobilefacenet-ft-candidate", manifest=manifest)
    assert _snapshot(store) == before
    (refusal,) = _refusals(store)
    assert refusal == {
        "model_version": "mobilefacenet-ft-candidate",
        "reason": str(refused.value)[:500],
    }


def test_an_altered_model_file_is_refused_before_it_is_read(chain: Chain, tmp_path: Path) -> None:
    copy = tmp_path / chain.a.path.name
    shutil.copy(chain.a.path, copy)
    shutil.copy(chain.a.manifest_path, copy.with_suffix(".json"))
    state = torch.load(copy, weights_only=True)
    state["conv3.bias"] = state["conv3.bias"] + 1e-4
    torch.save(state, copy)
    with pytest.raises(ModelCheckError, match="the file was altered"):
        read_model_file(copy)
    copy.with_suffix(".json").unlink()
    with pytest.raises(ModelCheckError, match="cannot read the model's manifest"):
        read_model_file(copy)


def test_a_store_without_the_key_checks_the_rest_and_says_so(
    chain: Chain, enrolled: Path, tmp_path: Path
) -> None:
    store = tmp_path / "keyless"
    shutil.copytree(enrolled, store)
    state, manifest = _unsigned(chain)
    assert manifest is not None
    report = adopt_model(store, state, fine_tuned_version(state), manifest=manifest)
    assert report.provenance.signed_by is None
    assert "signature NOT checked" in report.provenance.summary

    # Without the key the hash is still checked.
    other = tmp_path / "keyless-2"
    shutil.copytree(enrolled, other)
    tampered, signed = _tampered_weights(chain)
    with pytest.raises(ModelCheckError, match="do not match the sha256"):
        adopt_model(other, tampered, "mobilefacenet-ft-candidate", manifest=signed)
    assert recognition_version(other) == MOBILEFACENET_VERSION


def test_a_broken_key_file_makes_the_store_refuse_rather_than_trust(
    chain: Chain, store: Path
) -> None:
    model_signing_key_file(store).write_text("not a key\n", encoding="utf-8")
    state, manifest = _a(chain)
    with pytest.raises(ModelCheckError, match="adopts no model until"):
        adopt_model(store, state, fine_tuned_version(state), manifest=manifest)
    assert recognition_version(store) == MOBILEFACENET_VERSION
    assert json.loads(chain.a.manifest_path.read_text(encoding="utf-8"))["signature"]


def test_store_adopt_on_the_command_line(chain: Chain, store: Path, tmp_path: Path) -> None:
    """`loyalnet store adopt model-vNNNN.pt`: a one-line refusal, then a signed adoption."""

    def loyalnet(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "LOYALNET_STORE"}
        command = [sys.executable, "-m", "loyalnet_cli", "store", *args, "--store", str(store)]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)

    unsigned = tmp_path / chain.a.path.name
    shutil.copy(chain.a.path, unsigned)
    manifest = {k: v for k, v in read_manifest(chain.a).items() if k != "signature"}
    unsigned.with_suffix(".json").write_text(json.dumps(manifest), encoding="utf-8")
    refused = loyalnet("adopt", str(unsigned))
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("error:") and "not signed" in refused.stderr
    assert recognition_version(store) == MOBILEFACENET_VERSION

    adopted = loyalnet("adopt", str(chain.a.path), "--json")
    assert adopted.returncode == 0, adopted.stderr
    summary = json.loads(adopted.stdout)
    public = read_public_key(chain.tls.model_signing_public_key)
    assert summary["signed_by"] == key_id(public)
    assert summary["retemplated"] == len(MEMBERS)
    assert recognition_version(store) == summary["model_version"]
