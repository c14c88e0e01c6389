"""Federated rounds with real Flower processes: a SuperLink, SuperNodes, `flwr run`.

Every store is a real store folder with LFW people enrolled through the face pipeline, with
consent to model improvement. Each SuperNode reaches the SuperLink through a recording proxy
(``tests/fleet_recorder.py``), so the wire checks look at the bytes that actually left the
store. Every process is started in its own process group and stopped by it.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, fields
from pathlib import Path

import pytest
import torch
from fleet_recorder import Exchange, FleetRecorder, received_messages, sent_messages
from flwr.app import Message

from coordinator.flower_app import write_flower_app
from coordinator.initial_model import pretrained_backbone
from coordinator.model_versions import ModelVersion, list_model_versions, load_model_version
from coordinator.processes import LocalFederation, RunStatus
from coordinator.run_config import TRAINING_DEFAULTS
from loyalnet.assets import sha256_of
from loyalnet.packed_backbone import (
    PARAMETERS,
    RUNNING_MEANS,
    RUNNING_VARIANCES,
    BackboneLayout,
)
from loyalnet.update_encoding import DELTA_SUFFIX
from store_node.config import StoreConfig, StorePaths, write_config
from store_node.enrolment import EnrolmentRequest, enrol_member
from store_node.face import FacePipeline
from store_node.face.mobilefacenet import MobileFaceNet
from store_node.gallery import Gallery, Purpose
from store_node.training.backbone import backbone_state
from store_node.training.local import TrainingConfig

PHOTOS_PER_MEMBER = 2  # two crops a member: the wire checks need members, not many photos
# Member counts that are no dimension of any backbone tensor (those are 1, 3, 7, 64, 128, 256
# and 512), so a per-member axis in a sent array could not hide behind a model dimension.
MEMBERS_A, MEMBERS_B, MEMBERS_SMALL = 6, 9, 4
REPLY_METRICS = {
    "num-examples",
    "members",
    "declined",
    "loss-first-epoch",
    "loss-last-epoch",
    "train-seconds",
    "arrays-bytes",
}


@dataclass(frozen=True)
class Store:
    """A store folder and who is enrolled in it (ids and names to look for on the wire)."""

    folder: Path
    members: dict[str, str]  # member id -> display name
    crops: int

    @property
    def private_strings(self) -> list[bytes]:
        """Strings that must never leave the store, as bytes."""
        return [text.encode() for pair in self.members.items() for text in pair]


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline.load(threads=2)


@pytest.fixture(scope="module")
def people(lfw_images: Path) -> list[str]:
    """LFW people with more photos than a member enrols with, in name order."""
    return [
        person.name
        for person in sorted(lfw_images.iterdir())
        if len(list(person.glob("*.jpg"))) > PHOTOS_PER_MEMBER
    ]


@pytest.fixture(scope="module")
def stores_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stores")


# Three stores of distinct people, with 6, 9 and 4 consenting members.
@pytest.fixture(scope="module")
def store_a(
    stores_root: Path, people: list[str], lfw_images: Path, pipeline: FacePipeline
) -> Store:
    return _make_store(stores_root / "a", people[:MEMBERS_A], lfw_images, pipeline)


@pytest.fixture(scope="module")
def store_b(
    stores_root: Path, people: list[str], lfw_images: Path, pipeline: FacePipeline
) -> Store:
    chosen = people[MEMBERS_A : MEMBERS_A + MEMBERS_B]
    return _make_store(stores_root / "b", chosen, lfw_images, pipeline)


@pytest.fixture(scope="module")
def store_small(
    stores_root: Path, people: list[str], lfw_images: Path, pipeline: FacePipeline
) -> Store:
    first = MEMBERS_A + MEMBERS_B
    chosen = people[first : first + MEMBERS_SMALL]
    return _make_store(stores_root / "small", chosen, lfw_images, pipeline)


def _make_store(folder: Path, people: list[str], lfw: Path, pipeline: FacePipeline) -> Store:
    paths = StorePaths(folder)
    folder.mkdir(parents=True)
    Gallery.create(paths.database, paths.key).close()
    config = StoreConfig(store_id=f"test-{folder.name}")
    write_config(paths, config)
    members: dict[str, str] = {}
    crops = 0
    with Gallery.open(paths.database, paths.key) as gallery:
        for person in people:
            member_id = f"L-{secrets.token_hex(5)}"
            request = EnrolmentRequest(
                member_id=member_id,
                purposes=frozenset({Purpose.RECOGNITION, Purpose.MODEL_IMPROVEMENT}),
                policy_version=config.policy_version,
                retention_days=config.retention_days,
                display_name=person.replace("_", " "),
            )
            photos = sorted((lfw / person).glob("*.jpg"))[:PHOTOS_PER_MEMBER]
            report = enrol_member(gallery, pipeline, request, photos)
            assert report.crops_stored >= 1
            members[member_id] = person.replace("_", " ")
            crops += report.crops_stored
    return Store(folder, members, crops)


@dataclass
class Federation:
    """A running SuperLink, the coordinator's app, and recorded SuperNodes once added."""

    flower: LocalFederation
    coordinator: Path
    app: Path
    stack: ExitStack
    recorders: dict[str, FleetRecorder] = field(default_factory=dict)

    def add_store(self, name: str, store: Store) -> FleetRecorder:
        """Start the store's SuperNode behind a recording proxy."""
        assert self.flower.superlink is not None
        recorder = self.stack.enter_context(FleetRecorder(self.flower.superlink.address))
        self.recorders[name] = recorder
        self.flower.start_supernode(
            name, store.folder, superlink_address=recorder.address, node_config={"threads": 1}
        )
        return recorder

    def run(self, timeout: float = 400, **overrides: bool | int | float | str) -> RunStatus:
        """Submit a run of the app and wait for its end.

        Until every recorded store has replied, the SuperLink is asked for the run's status
        every 20 s, not every 3 s: each ask is a ``flwr`` process, and on two cores asking
        that often through the whole round slows the round down.
        """
        replies_before = {name: _replies(r) for name, r in self.recorders.items()}
        run_id = self.flower.submit_run(self.app, overrides)
        deadline = time.monotonic() + timeout
        next_ask = time.monotonic() + 20
        while time.monotonic() < deadline and any(
            _replies(r) == replies_before[name] for name, r in self.recorders.items()
        ):
            if time.monotonic() >= next_ask:
                if self.flower.run_status(run_id).finished:
                    break
                next_ask = time.monotonic() + 20
            time.sleep(0.5)
        left = max(deadline - time.monotonic(), 10.0)
        status = self.flower.wait_for_run(run_id, timeout_seconds=left)
        print(f"run {run_id}: {status}")
        return status


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    """A SuperLink and the app; every process is stopped at the end, then the proxies."""
    coordinator = tmp_path / "coordinator"
    with ExitStack() as stack:
        # Insecure: the recording proxies read the plain wire (TLS is tested separately).
        flower = stack.enter_context(LocalFederation(tmp_path / "flower", insecure=True))
        flower.start_superlink()
        yield Federation(flower, coordinator, write_flower_app(coordinator), stack)
        flower.stop()  # before the proxies close, so the nodes leave through them


def test_training_defaults_match_the_store_side() -> None:
    defaults = {f.name.replace("_", "-"): f.default for f in fields(TrainingConfig)}
    assert {key: defaults[key] for key in TRAINING_DEFAULTS} == TRAINING_DEFAULTS
    assert set(defaults) - set(TRAINING_DEFAULTS) == {"proximal-mu"}  # FedProx sends it


def test_coordinator_imports_no_face_code() -> None:
    script = (
        "import sys, coordinator.server_app, coordinator.processes, coordinator.flower_app; "
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] == 'store_node'); "
        "assert not leaked, leaked"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# Not marked slow although it takes about a minute: it is the proof that no member data
# leaves a store, so it runs in every default test run.
def test_one_round_two_stores_and_the_wire(
    federation: Federation, store_a: Store, store_b: Store
) -> None:
    started = time.perf_counter()
    recorded = {
        "a": federation.add_store("store-a", store_a),
        "b": federation.add_store("store-b", store_b),
    }
    federation.flower.wait_for_supernodes(2)
    # release-mix 0.5: the saved version is halfway from the pretrained model to the average.
    status = federation.run(**{"min-stores": 2, "store-wait-seconds": 60, "release-mix": 0.5})
    assert status.completed, federation.flower.run_log(status.run_id)
    federation.flower.stop()
    print(
        f"round with 2 stores: {status.elapsed_seconds:.1f} s in the SuperLink, "
        f"{time.perf_counter() - started:.1f} s with start-up"
    )

    saved = _only_version(federation.coordinator)
    manifest = json.loads(saved.manifest_path.read_text())
    assert manifest["sha256"] == sha256_of(saved.path) == saved.sha256
    round_1 = manifest["rounds"]["1"]
    assert round_1["stores-trained"] == 2 and round_1["stores-declined"] == 0
    assert round_1["num-examples"] == store_a.crops + store_b.crops
    assert round_1["members"] == MEMBERS_A + MEMBERS_B

    layout = BackboneLayout.of(backbone_state(MobileFaceNet()))
    assert BackboneLayout.of(pretrained_backbone()) == layout
    # Three flat arrays of exactly the backbone's numbers: a class row per member, or any
    # other extra, would change a length.
    expected = {key: (size,) for key, size in layout.sizes().items()}
    assert list(expected) == [PARAMETERS, RUNNING_MEANS, RUNNING_VARIANCES]

    updates = {}
    for name, store in (("a", store_a), ("b", store_b)):
        exchanges = recorded[name].recorded()
        reply = _one_reply(exchanges)
        metrics = reply.content.metric_records["metrics"]
        assert set(metrics) == REPLY_METRICS
        assert metrics["members"] == len(store.members)
        assert metrics["num-examples"] == store.crops and metrics["declined"] == 0
        arrays = reply.content.array_records["arrays"]
        shapes = {key: tuple(array.shape) for key, array in arrays.items()}
        assert shapes == expected  # names and lengths, nothing more, nothing less
        _assert_no_member_data(exchanges, store)
        sent = sum(len(x.request) + len(x.request_headers) for x in exchanges)
        print(f"store {name}: sent {sent} bytes in {len(exchanges)} requests")
        updates[name] = (layout.unpack(arrays.to_torch_state_dict()), store.crops)

    # FedAvg: the round's model is the average of what was sent, weighted by num-examples;
    # the version released keeps half of its change from the pretrained model.
    model = load_model_version(saved)
    pretrained = pretrained_backbone()
    total = store_a.crops + store_b.crops
    moved = 0
    for key, value in model.items():
        mean = sum(state[key] * (weight / total) for state, weight in updates.values())
        assert torch.allclose(value, (pretrained[key] + mean) / 2, atol=1e-6), key
        moved += int(not torch.equal(mean, pretrained[key]))
    assert moved > 0  # the round did change the model, so the mix was tested


@pytest.mark.slow
def test_a_float16_round_sends_the_change_in_half_the_bytes(
    federation: Federation, store_a: Store, store_b: Store
) -> None:
    """``update-encoding = "float16-delta"``: each store sends its change from the global model
    in float16, the same three arrays' names with the suffix, nothing else, about half the bytes;
    the coordinator averages the changes added back to the model it sent."""
    recorded = {
        "a": federation.add_store("store-a", store_a),
        "b": federation.add_store("store-b", store_b),
    }
    federation.flower.wait_for_supernodes(2)
    status = federation.run(
        **{"min-stores": 2, "store-wait-seconds": 60, "update-encoding": "float16-delta"}
    )
    assert status.completed, federation.flower.run_log(status.run_id)
    federation.flower.stop()

    layout = BackboneLayout.of(pretrained_backbone())
    start = layout.pack(pretrained_backbone())
    expected = {key + DELTA_SUFFIX: (size,) for key, size in layout.sizes().items()}
    changes = {}
    for name, store in (("a", store_a), ("b", store_b)):
        exchanges = recorded[name].recorded()
        # Frozen BatchNorm: both stores' statistics changes are the same zeros, which the
        # SuperLink takes from whichever store pushed them first.
        other = recorded["b" if name == "a" else "a"].recorded()
        reply = _one_reply(exchanges, other)
        arrays = reply.content.array_records["arrays"]
        assert {key: tuple(a.shape) for key, a in arrays.items()} == expected
        assert {a.dtype for a in arrays.values()} == {"float16"}
        metrics = reply.content.metric_records["metrics"]
        assert metrics["arrays-bytes"] == arrays.count_bytes()
        assert arrays.count_bytes() < 0.51 * 4 * sum(layout.sizes().values())
        _assert_no_member_data(exchanges, store)
        sent = sum(len(x.request) + len(x.request_headers) for x in exchanges)
        print(f"store {name}: sent {sent} bytes in {len(exchanges)} requests (float16 change)")
        changes[name] = (
            {
                k.removesuffix(DELTA_SUFFIX): torch.from_numpy(a.numpy().astype("float32"))
                for k, a in arrays.items()
            },
            store.crops,
        )
    model = layout.pack(load_model_version(_only_version(federation.coordinator)))
    total = store_a.crops + store_b.crops
    for key, value in model.items():
        mean = start[key] + sum(c[key] * (w / total) for c, w in changes.values())
        assert torch.allclose(value, mean, atol=1e-6), key


def test_a_run_without_stores_fails_instead_of_waiting(federation: Federation) -> None:
    """Flower alone would wait for SuperNodes forever; the run must end, saying why."""
    status = federation.run(timeout=120, **{"min-stores": 1, "store-wait-seconds": 3})
    assert status.status == "finished:failed"
    assert "min-stores" in status.details, status.details
    assert list_model_versions(federation.coordinator / "models") == []


@pytest.mark.slow
def test_declining_store_is_not_counted(
    federation: Federation, store_a: Store, store_small: Store
) -> None:
    recorded = federation.add_store("store-small", store_small)
    federation.add_store("store-a", store_a)
    federation.flower.wait_for_supernodes(2)

    # FedProx here, to see its mu reach the stores with the run's training settings.
    status = federation.run(**{"min-stores": 2, "min-members": 5, "strategy": "fedprox"})
    assert status.completed, federation.flower.run_log(status.run_id)
    (asked,) = received_messages(recorded.recorded())
    config = asked.content.config_records["config"]
    assert config["proximal-mu"] == 0.01 and config["min-members"] == 5
    saved = _only_version(federation.coordinator)
    round_1 = json.loads(saved.manifest_path.read_text())["rounds"]["1"]
    assert round_1["stores-trained"] == 1 and round_1["stores-declined"] == 1
    assert round_1["members"] == MEMBERS_A

    exchanges = recorded.recorded()
    reply = _one_reply(exchanges)
    metrics = reply.content.metric_records["metrics"]
    assert dict(metrics) == {"declined": 1}  # no count at all, not even of its members
    assert not reply.content.array_records["arrays"]  # no model at all, trained or not
    _assert_no_member_data(exchanges, store_small)
    sent = sum(len(x.request) + len(x.request_headers) for x in exchanges)
    print(f"declining store: sent {sent} bytes in {len(exchanges)} requests")

    # Only store A's update counts: the model is exactly what A sent.
    a_sent = _one_reply(federation.recorders["store-a"].recorded())
    packed = a_sent.content.array_records["arrays"].to_torch_state_dict()
    a_state = BackboneLayout.of(backbone_state(MobileFaceNet())).unpack(packed)
    model = load_model_version(saved)
    assert all(torch.equal(model[key], a_state[key]) for key in model)

    # When every store declines, there is nothing to save and the run says why.
    status = federation.run(**{"min-stores": 2, "min-members": 50})
    assert status.status == "finished:failed"
    assert "NoStoreTrainedError" in status.details or "no store" in status.details
    assert list_model_versions(federation.coordinator / "models") == [saved]


@pytest.mark.slow
def test_a_store_dying_mid_round_does_not_stall_it(
    federation: Federation, store_a: Store, store_b: Store
) -> None:
    federation.add_store("store-a", store_a)
    doomed = federation.add_store("store-b", store_b)
    federation.flower.wait_for_supernodes(2)
    run_id = federation.flower.submit_run(federation.app, {"min-stores": 2})

    # Kill store B once it is downloading the round's model: mid-round, with no goodbye.
    deadline = time.monotonic() + 120
    while not any(x.path.endswith("/pull-object") for x in doomed.recorded()):
        assert time.monotonic() < deadline, "store B never received the round"
        time.sleep(0.2)
    killed_at = time.perf_counter()
    federation.flower.supernodes["store-b"].kill()

    status = federation.flower.wait_for_run(run_id, timeout_seconds=300)
    waited = time.perf_counter() - killed_at
    print(f"round finished {waited:.1f} s after store B died")
    assert status.completed, federation.flower.run_log(run_id)
    round_1 = json.loads(_only_version(federation.coordinator).manifest_path.read_text())
    assert round_1["rounds"]["1"]["stores-trained"] == 1
    assert round_1["rounds"]["1"]["stores-failed"] == 1


def _replies(recorder: FleetRecorder) -> int:
    """How many replies the store has sent in full: a reply's message goes first, its objects
    follow, and only then does the store ask for messages again."""
    sent = pushed = 0
    for exchange in recorder.recorded():
        if exchange.path.endswith("/push-messages"):
            pushed += 1
        elif exchange.path.endswith("/pull-messages"):
            sent, pushed = sent + pushed, 0
    return sent


def _only_version(coordinator: Path) -> ModelVersion:
    versions = list_model_versions(coordinator / "models")
    assert len(versions) == 1, versions
    return versions[0]


def _one_reply(exchanges: list[Exchange], elsewhere: list[Exchange] | None = None) -> Message:
    """The one message a store pushed in the round, with only the records expected."""
    messages = sent_messages(exchanges, elsewhere)
    assert len(messages) == 1, messages
    reply = messages[0]
    assert reply.metadata.message_type == "train"
    assert set(reply.content.array_records) == {"arrays"}
    assert set(reply.content.metric_records) == {"metrics"}
    assert not reply.content.config_records
    return reply


def _assert_no_member_data(exchanges: list[Exchange], store: Store) -> None:
    """No member id or display name in anything the store sent, headers included."""
    wire = b"".join(x.request_headers + x.request for x in exchanges)
    assert wire, "nothing was recorded"
    for text in store.private_strings:
        assert text not in wire, text
