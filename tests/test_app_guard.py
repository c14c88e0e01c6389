"""The store runs only its own ClientApp: a bundle with code or another component is refused.

The unit tests build bundles the way ``flwr run`` does (Flower's ``build_fab_from_disk``) from
the coordinator's generated app folder, altered. The federation test sends a bundle whose
modules would write a marker file when imported to a real SuperNode (``loyalnet-supernode``,
as ``LocalFederation`` starts it) through a real SuperLink on 127.0.0.1, and checks that the
run fails with the store's refusal as the reply, that the store's log says why, and that the
marker never appears. Every process is stopped by process group when the federation closes.
"""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import pytest
from fleet_recorder import FleetRecorder, sent_messages
from flwr.cli.build import build_fab_from_disk
from flwr.common.constant import ErrorCode
from flwr.supercore.constant import TaskType
from flwr.supercore.run import Run

from coordinator import flower_app
from coordinator.flower_app import write_flower_app
from coordinator.model_versions import list_model_versions
from coordinator.processes import LocalFederation
from store_node import app_guard
from store_node.app_guard import bundle_problems

GOOD_COMPONENT = 'clientapp = "store_node.client_app:app"'


def evil_module(marker: Path, name: str) -> str:
    """Source of a module that leaves a marker (and who ran it) the moment it is imported."""
    return (
        "import os, pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text("
        f"{name!r} + ' ran with FLWR_HOME=' + os.environ.get('FLWR_HOME', ''))\n"
        "app = None\n"
    )


def app_folder(root: Path) -> Path:
    """The coordinator's own app folder (its generated pyproject.toml, nothing else)."""
    return write_flower_app(root / "coordinator")


def set_client_app(app: Path, reference: str) -> None:
    pyproject = app / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    assert text.count(GOOD_COMPONENT) == 1
    pyproject.write_text(
        text.replace(GOOD_COMPONENT, f"clientapp = {reference!r}".replace("'", '"')),
        encoding="utf-8",
    )


def add_evil_code(app: Path, marker: Path) -> None:
    """An ``evil`` module and a ``store_node`` package that would shadow the installed one."""
    (app / "evil.py").write_text(evil_module(marker, "evil"), encoding="utf-8")
    (app / "store_node").mkdir()
    (app / "store_node" / "__init__.py").write_text("", encoding="utf-8")
    (app / "store_node" / "client_app.py").write_text(
        evil_module(marker, "store_node.client_app"), encoding="utf-8"
    )


def run_of(fab: bytes, **changes: str) -> Run:
    """The run a SuperLink would describe for ``fab``, with ``changes``."""
    run = replace(
        Run.create_empty(7),
        fab_id="loyalnet/loyalnet-federated",
        fab_version="0.1.0",
        fab_hash=hashlib.sha256(fab).hexdigest(),
        primary_task_type=TaskType.SERVER_APP,
    )
    return replace(run, **changes)


def hand_made_fab(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_the_guard_names_what_the_coordinator_writes() -> None:
    assert app_guard.PUBLISHER == flower_app.PUBLISHER
    assert app_guard.APP_NAME == flower_app.APP_NAME
    assert app_guard.CLIENT_APP == flower_app.CLIENT_APP


def test_the_coordinators_bundle_is_accepted(tmp_path: Path) -> None:
    fab = build_fab_from_disk(app_folder(tmp_path))
    assert bundle_problems(fab) == []
    assert bundle_problems(fab, run_of(fab), hashlib.sha256(fab).hexdigest()) == []


def test_a_bundle_with_code_is_refused(tmp_path: Path) -> None:
    app = app_folder(tmp_path)
    add_evil_code(app, tmp_path / "marker")
    problems = bundle_problems(build_fab_from_disk(app))
    assert len(problems) == 1, problems  # the component is the right one: only the files
    assert "evil.py" in problems[0] and "store_node/client_app.py" in problems[0]
    assert not (tmp_path / "marker").exists()


def test_a_bundle_naming_another_client_app_is_refused(tmp_path: Path) -> None:
    app = app_folder(tmp_path)
    set_client_app(app, "evil:app")
    problems = bundle_problems(build_fab_from_disk(app))
    assert problems == ["its clientapp component is 'evil:app', not 'store_node.client_app:app'"]


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ('publisher = "loyalnet"', 'publisher = "mallory"', "publisher"),
        ('name = "loyalnet-federated"', 'name = "other-app"', "its name"),
        ("dependencies = []", 'dependencies = ["evil-package"]', "dependencies"),
        (GOOD_COMPONENT, GOOD_COMPONENT + '\nagentapp = "evil:app"', "components other"),
    ],
)
def test_a_bundle_of_another_app_is_refused(
    tmp_path: Path, old: str, new: str, reason: str
) -> None:
    app = app_folder(tmp_path)
    pyproject = app / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    assert text.count(old) == 1
    pyproject.write_text(text.replace(old, new), encoding="utf-8")
    problems = bundle_problems(build_fab_from_disk(app))
    assert len(problems) == 1 and reason in problems[0], problems


def test_a_run_that_names_another_bundle_or_app_is_refused(tmp_path: Path) -> None:
    fab = build_fab_from_disk(app_folder(tmp_path))
    other = "0" * 64
    assert "names bundle" in " ".join(bundle_problems(fab, run_of(fab, fab_hash=other)))
    assert "names app" in " ".join(bundle_problems(fab, run_of(fab, fab_id="x/../../evil")))
    assert "names app" in " ".join(bundle_problems(fab, run_of(fab, fab_version="9")))
    agent = run_of(fab, primary_task_type=TaskType.AGENT_APP)
    assert "agent-app" in " ".join(bundle_problems(fab, agent))
    assert "served as" in " ".join(bundle_problems(fab, served_hash=other))


def test_archives_that_are_no_bundle_of_ours_are_refused(tmp_path: Path) -> None:
    good = build_fab_from_disk(app_folder(tmp_path))
    with zipfile.ZipFile(io.BytesIO(good)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    assert bundle_problems(b"not a zip") == ["it is not a zip archive"]
    assert bundle_problems(hand_made_fab(files)) == []  # the same files, zipped here
    sneaky = hand_made_fab({**files, "evil.pth": b"import evil"})
    assert "evil.pth" in bundle_problems(sneaky)[0]
    buffer = io.BytesIO()
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(buffer, "w") as zipped:
        for name, content in [*files.items(), ("pyproject.toml", b"[project]\n")]:
            zipped.writestr(name, content)
    assert "twice" in " ".join(bundle_problems(buffer.getvalue()))
    manifest = {**files, ".info/CONTENT": b"pyproject.toml,0000,8\nevil.py,0000,8"}
    assert "manifest" in " ".join(bundle_problems(hand_made_fab(manifest)))
    not_toml = {**files, "pyproject.toml": b"[project"}
    assert "not valid TOML" in " ".join(bundle_problems(hand_made_fab(not_toml)))


def test_the_guard_is_installed_once_and_only_where_flower_calls_it() -> None:
    from flwr.supernode import start_client_internal as flower

    original = flower._pull_and_store_message
    try:
        app_guard.install_guard()
        guarded = flower._pull_and_store_message
        assert guarded is not original and guarded.__wrapped__ is original
        app_guard.install_guard()
        assert flower._pull_and_store_message is guarded
    finally:
        flower._pull_and_store_message = original


def test_a_supernode_refuses_a_bundle_with_code_and_runs_none_of_it(tmp_path: Path) -> None:
    started = time.perf_counter()
    marker = tmp_path / "marker"
    app = app_folder(tmp_path)
    set_client_app(app, "evil:app")
    add_evil_code(app, marker)
    store = tmp_path / "store"  # the ClientApp must never run, so an empty folder will do
    store.mkdir()
    with ExitStack() as stack:
        federation = stack.enter_context(LocalFederation(tmp_path / "flower", insecure=True))
        superlink = federation.start_superlink()
        # Between the store and the SuperLink: what the store answered, as it went.
        recorder = stack.enter_context(FleetRecorder(superlink.address))
        node = federation.start_supernode("store", store, superlink_address=recorder.address)
        federation.wait_for_supernodes(1)
        # A round timeout far beyond the wait below: a store that did not answer fails it.
        run_config = {"min-stores": 1, "store-wait-seconds": 30, "round-timeout-seconds": 600}
        run_id = federation.submit_run(app, run_config)
        status = federation.wait_for_run(run_id, timeout_seconds=150)
        assert node.running(), node.log_tail()  # the refusal did not take the store down
        federation.stop()  # before the proxy closes, so the node leaves through it
    store_log = node.log_path.read_text(encoding="utf-8", errors="replace")
    print(f"refused run: {status}; {time.perf_counter() - started:.1f} s with start-up")
    print(*[line for line in store_log.splitlines() if "bundle" in line], sep="\n")

    assert not marker.exists(), marker.read_text()
    assert "flwr-clientapp" not in store_log  # no ClientApp process was even started
    assert not list((tmp_path / "flower" / "flwr-home-store").glob("apps/*"))  # not installed
    assert "Refused the app bundle" in store_log, store_log
    assert "evil.py" in store_log and "'evil:app'" in store_log
    assert status.status == "finished:failed", status
    assert list_model_versions(tmp_path / "coordinator" / "models") == []
    # The store answered at once with an error reply that says why, so the round did not
    # wait for its timeout.
    (reply,) = sent_messages(recorder.recorded())
    assert reply.has_error() and reply.error.code == ErrorCode.INVALID_FAB
    assert "refused the app bundle" in reply.error.reason and "evil.py" in reply.error.reason
    assert status.elapsed_seconds < 120, status
