"""The secure federation: TLS to the SuperLink and only registered stores' SuperNodes admitted.

The CLI test drives the real ``loyalnet`` command in child processes. The federation tests
start a real SuperLink with TLS and SuperNode authentication on 127.0.0.1, with the
coordinator's certificates from ``loyalnet coordinator init``'s code, and real SuperNodes
signing with store keys from ``loyalnet store join``'s; every process is stopped by process
group when the ``LocalFederation`` closes, and FLWR_HOME is always under ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from coordinator.errors import FlowerProcessError
from coordinator.flower_app import write_flower_app
from coordinator.home import CoordinatorHome, create_coordinator_home
from coordinator.model_versions import list_model_versions
from coordinator.pki import create_coordinator_tls
from coordinator.processes import NODE_PRIVATE_KEY_NAME, LocalFederation, free_port
from store_node.config import StoreConfig, StorePaths, read_config, write_config
from store_node.enrolment import EnrolmentRequest, enrol_member
from store_node.face import FacePipeline
from store_node.gallery import Gallery, Purpose
from store_node.joining import join_federation
from store_node.node_identity import NodeIdentity, create_node_identity

PRIVATE = 0o600
TRAINING_MEMBERS = 5  # the run config's default min-members: the store trains, not declines
PHOTOS_PER_MEMBER = 3


def loyalnet(
    *args: str, cwd: Path, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the real `loyalnet` command in a child process, with no folder settings inherited."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("LOYALNET_STORE", "LOYALNET_COORDINATOR", "LOYALNET_CONFIG")
    }
    environment["LOYALNET_CONFIG"] = str(cwd / "no-config.toml")
    environment.update(env or {})
    command = [sys.executable, "-m", "loyalnet_cli", *args]
    done = subprocess.run(
        command, capture_output=True, text=True, env=environment, cwd=cwd, timeout=300
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{command} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_coordinator_init_store_join_and_register_via_the_cli(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there: register-store only keeps the key
    loyalnet(
        "coordinator", "init", "--dir", "co", "--chain", "acme", "--host", "link.acme.test",
        "--port", str(port), cwd=tmp_path,
    )  # fmt: skip
    home = CoordinatorHome(tmp_path / "co")
    tls = home.tls
    assert tls.exists() and home.stores.is_dir()
    assert mode(tls.ca_key) == PRIVATE and mode(tls.server_key) == PRIVATE
    settings = tomllib.loads(home.config_path.read_text())
    assert settings == {
        "chain": "acme",
        "superlink_port": port,
        "control_port": 8100,
        "heartbeat_seconds": 10,
        "hosts": ["localhost", "127.0.0.1", "link.acme.test"],
    }
    server = x509.load_pem_x509_certificate(tls.server_certificate.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "link.acme.test" in names.get_values_for_type(x509.DNSName)

    loyalnet("store", "init", "--store", "shop", "--store-id", "shop-1", cwd=tmp_path)
    joined = loyalnet(
        "store", "join", "--store", "shop", "--ca", "co/tls/ca.crt",
        "--superlink", f"link.acme.test:{port}", cwd=tmp_path,
    )  # fmt: skip
    store = StorePaths(tmp_path / "shop")
    identity = NodeIdentity(store.root)
    assert mode(identity.private_key) == PRIVATE and mode(store.key) == PRIVATE
    public = serialization.load_ssh_public_key(identity.public_key.read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp384r1"
    assert store.ca_certificate.read_bytes() == tls.ca_certificate.read_bytes()
    assert read_config(store).superlink == f"link.acme.test:{port}"
    assert str(identity.public_key.resolve()) in joined.stdout

    # Joining again keeps the key pair the chain knows the store by.
    before = identity.private_key.read_bytes()
    again = loyalnet(
        "store", "join", "--store", "shop", "--ca", "co/tls/ca.crt",
        "--superlink", "other.acme.test:443", cwd=tmp_path,
    )  # fmt: skip
    assert "kept" in again.stdout and identity.private_key.read_bytes() == before
    assert read_config(store).superlink == "other.acme.test:443"

    registered = loyalnet(
        "coordinator", "register-store", str(identity.public_key), "--name", "shop-1",
        "--dir", "co", cwd=tmp_path,
    )  # fmt: skip
    assert home.store_key("shop-1").read_bytes() == identity.public_key.read_bytes()
    assert "not registered yet" in registered.stdout
    assert home.store_keys() == {"shop-1": home.store_key("shop-1")}

    # Mistakes end in one actionable line.
    wrong_ca = loyalnet(
        "store", "join", "--store", "shop", "--ca", "co/tls/server.pem",
        "--superlink", "link.acme.test:1", cwd=tmp_path, check=False,
    )  # fmt: skip
    assert wrong_ca.returncode == 1 and "not a CA certificate" in wrong_ca.stderr
    other = tmp_path / "other.pub"
    other.write_bytes(_new_public_key(tmp_path / "other"))
    taken = loyalnet(
        "coordinator", "register-store", str(other), "--name", "shop-1", "--dir", "co",
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert taken.returncode == 1 and "already has a different key" in taken.stderr
    twice = loyalnet("coordinator", "init", "--dir", "co", cwd=tmp_path, check=False)
    assert twice.returncode == 1 and "already holds a coordinator" in twice.stderr

    # Without --dir: $LOYALNET_COORDINATOR, else ./coordinator-home.
    loyalnet("coordinator", "init", cwd=tmp_path, env={"LOYALNET_COORDINATOR": "chain-b"})
    loyalnet("coordinator", "init", cwd=tmp_path)
    assert CoordinatorHome(tmp_path / "chain-b").read_config().chain == "loyalnet"
    assert CoordinatorHome(tmp_path / "coordinator-home").tls.exists()


def _new_public_key(folder: Path) -> bytes:
    folder.mkdir()
    return create_node_identity(folder).public_key.read_bytes()


@pytest.fixture
def coordinator(tmp_path: Path) -> CoordinatorHome:
    return create_coordinator_home(tmp_path / "co", "test-chain", superlink_port=free_port())


@pytest.fixture
def federation(coordinator: CoordinatorHome) -> Iterator[LocalFederation]:
    """The coordinator's secure SuperLink; every process is stopped at the end."""
    with coordinator.local_federation() as federation:
        federation.start_superlink()
        yield federation


def _joined_store(folder: Path, ca_certificate: Path, port: int) -> StorePaths:
    """A store folder that joined the federation (no members needed to connect)."""
    paths = StorePaths(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not paths.config.exists():
        write_config(paths, StoreConfig(store_id=folder.name))
    join_federation(paths, ca_certificate, f"127.0.0.1:{port}")
    return paths


def test_registered_store_connects_over_tls_and_an_unregistered_one_is_refused(
    coordinator: CoordinatorHome, federation: LocalFederation, tmp_path: Path
) -> None:
    started = time.perf_counter()
    port = coordinator.read_config().superlink_port
    ca = coordinator.tls.ca_certificate
    _assert_tls_only(port, ca, tmp_path)

    member = _joined_store(tmp_path / "store-a", ca, port)
    intruder = _joined_store(tmp_path / "intruder", ca, port)
    # The chain registers store A through the real CLI, against the running SuperLink.
    registered = loyalnet(
        "coordinator", "register-store", str(member.root / "node.pub"), "--name", "store-a",
        "--dir", str(coordinator.folder), cwd=tmp_path,
    )  # fmt: skip
    assert "registered with the SuperLink" in registered.stdout, registered.stdout
    again = loyalnet(
        "coordinator", "register-store", str(member.root / "node.pub"), "--name", "store-a",
        "--dir", str(coordinator.folder), cwd=tmp_path,
    )  # fmt: skip
    assert "already registered" in again.stdout, again.stdout

    federation.start_supernode("store-a", member.root)
    federation.wait_for_supernodes(1)
    print(f"registered store online {time.perf_counter() - started:.1f} s after the start")

    refused_at = time.perf_counter()
    with pytest.raises(FlowerProcessError, match="Flower exit code 305") as refusal:
        federation.start_supernode("intruder", intruder.root)
        federation.wait_for_supernodes(2, timeout_seconds=60)
    print(f"unregistered store refused after {time.perf_counter() - refused_at:.1f} s")
    assert "register-store" in str(refusal.value)  # the message says what to do
    if "intruder" in federation.supernodes:  # else it exited before it even listened
        intruder_node = federation.supernodes["intruder"]
        assert intruder_node.popen.returncode == 1  # Flower exits 1, logging its code
        assert intruder_node.flower_exit_code() == 305
    assert "Failed to activate SuperNode" in (federation.workdir / "logs/intruder.log").read_text()

    (node,) = federation.supernode_list()  # only the registered store is known
    assert node["status"] == "online"
    assert federation.supernodes["store-a"].running()


def _assert_tls_only(port: int, ca: Path, tmp_path: Path) -> None:
    """The SuperLink speaks TLS with a certificate of the chain's CA, and nothing else."""
    trusting = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        trusting.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        subject = tls.getpeercert()["subject"]
    assert (("commonName", "test-chain SuperLink"),) in subject
    stranger = create_coordinator_tls(tmp_path / "stranger", "stranger")
    distrusting = ssl.create_default_context(cafile=str(stranger.ca_certificate))
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        distrusting.wrap_socket(raw, server_hostname="127.0.0.1"),
    ):
        pass
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = plain.recv(64)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 2")


def test_the_store_key_name_is_the_one_join_writes(tmp_path: Path) -> None:
    assert NodeIdentity(tmp_path).private_key == tmp_path / NODE_PRIVATE_KEY_NAME


def test_the_coordinator_cli_imports_no_face_code() -> None:
    script = (
        "import sys, coordinator.cli, coordinator.home, coordinator.flwr_cli; "
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] == 'store_node' "
        "or m == 'torch'); "
        "assert not leaked, leaked"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_superlink_restart_keeps_registrations_and_a_later_run_completes(
    coordinator: CoordinatorHome,
    federation: LocalFederation,
    tmp_path: Path,
    lfw_images: Path,
) -> None:
    port = coordinator.read_config().superlink_port
    store = _joined_store(tmp_path / "store-a", coordinator.tls.ca_certificate, port)
    _enrol_lfw_members(store, lfw_images, TRAINING_MEMBERS)
    node_id = federation.register_store(store.root / "node.pub", "store-a")
    federation.start_supernode("store-a", store.root, node_config={"threads": 1})
    federation.wait_for_supernodes(1)

    node = federation.supernodes["store-a"]

    def reconnections() -> int:  # Flower logs one line each time it got through after retries
        return node.log_path.read_text(errors="replace").count("Connection successful after")

    before = reconnections()
    started = time.perf_counter()
    federation.restart_superlink()
    deadline = time.monotonic() + 120
    while reconnections() == before:
        assert node.running(), node.log_tail()
        assert time.monotonic() < deadline, node.log_tail()
        time.sleep(1)
    print(f"store reconnected {time.perf_counter() - started:.1f} s after the restart began")
    federation.wait_for_supernodes(1)
    (known,) = federation.supernode_list()
    assert int(known["node-id"]) == node_id  # the registration survived, same node

    coordinator_dir = tmp_path / "coordinator"
    run_id = federation.submit_run(
        write_flower_app(coordinator_dir),
        {"min-stores": 1, "store-wait-seconds": 60, "local-epochs": 1},
    )
    status = federation.wait_for_run(run_id, timeout_seconds=400)
    print(f"run after the restart: {status.status} in {status.elapsed_seconds:.1f} s")
    assert status.completed, federation.run_log(run_id)
    (saved,) = list_model_versions(coordinator_dir / "models")
    round_1 = json.loads(saved.manifest_path.read_text())["rounds"]["1"]
    assert round_1["stores-trained"] == 1 and round_1["members"] == TRAINING_MEMBERS


def _enrol_lfw_members(store: StorePaths, lfw: Path, count: int) -> None:
    """Enrol ``count`` LFW people, consenting to model improvement, into a new gallery."""
    people = [
        person
        for person in sorted(lfw.iterdir())
        if len(list(person.glob("*.jpg"))) >= PHOTOS_PER_MEMBER
    ][:count]
    config = read_config(store)
    pipeline = FacePipeline.load(threads=2)
    Gallery.create(store.database, store.key).close()
    with Gallery.open(store.database, store.key) as gallery:
        for person in people:
            request = EnrolmentRequest(
                member_id=f"L-{secrets.token_hex(5)}",
                purposes=frozenset({Purpose.RECOGNITION, Purpose.MODEL_IMPROVEMENT}),
                policy_version=config.policy_version,
                retention_days=config.retention_days,
            )
            photos = sorted(person.glob("*.jpg"))[:PHOTOS_PER_MEMBER]
            assert enrol_member(gallery, pipeline, request, photos).crops_stored >= 1
