"""The chain operated for real: `loyalnet coordinator serve`, three `loyalnet store serve`
processes and `loyalnet admin`, all on 127.0.0.1 with the chain's own certificates.

One story, in the order a chain lives it: stores join and are registered; a member's erasure
is requested while one store is offline; the coordinator restarts mid-way; the offline store
comes back and answers; every store's gallery has forgotten the member and three verified
receipts are on record. Then a signed model version is promoted and reaches every store, and a
model tampered on its way is refused by the store that received it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import test_model_check
import torch
from typer.testing import CliRunner

from coordinator.admin_cli import admin_app
from coordinator.cli import coordinator_app
from coordinator.home import CoordinatorHome
from coordinator.model_versions import save_model_version
from coordinator.pki import load_model_signing_key
from coordinator.processes import free_port
from store_node.cli import store_app
from store_node.config import StorePaths, read_config, write_config
from store_node.gallery import Gallery

enrolled = test_model_check.enrolled
pretrained = test_model_check.pretrained
MEMBER = test_model_check.MEMBERS[0]
STORES = ("store-north", "store-south", "store-east")
runner = CliRunner()


def _invoke(app: object, *args: str) -> str:
    result = runner.invoke(app, list(args))  # type: ignore[arg-type]
    assert result.exit_code == 0, f"{args}: {result.output}"
    return str(result.output)


def _admin(coordinator: Path, *args: str) -> dict[str, object]:
    return json.loads(_invoke(admin_app, "--dir", str(coordinator), *args, "--json"))  # type: ignore[no-any-return]


class Processes:
    """Processes started by the test, each in its own session, all killed by pid at the end."""

    def __init__(self, logs: Path) -> None:
        self._logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALNET_")}
        log = (self._logs / f"{name}.log").open("ab")
        self.running[name] = subprocess.Popen(
            [sys.executable, "-m", "loyalnet_cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def stop(self, name: str) -> int:
        process = self.running.pop(name)
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=60)

    def kill_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.running.clear()

    def log(self, name: str) -> str:
        return (self._logs / f"{name}.log").read_text(errors="replace")


def _wait_for(
    condition: Callable[[], bool], seconds: float, what: str, processes: Processes
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    logs = "\n".join(
        f"--- {n}\n{processes.log(n)[-2000:]}" for n in (*processes.running, "coordinator")
    )
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    logs = tmp_path / "logs"
    logs.mkdir()
    started = Processes(logs)
    try:
        yield started
    finally:
        started.kill_all()


def _members(store: Path) -> list[str]:
    paths = StorePaths(store)
    with Gallery.open(paths.database, paths.key) as gallery:
        return [m.member_id for m in gallery.members()]


def test_a_chain_erases_everywhere_and_rolls_out_signed_models(
    tmp_path: Path, enrolled: Path, pretrained: dict[str, torch.Tensor], processes: Processes
) -> None:
    coordinator = tmp_path / "coordinator"
    port = free_port()
    _invoke(
        coordinator_app, "init", "--dir", str(coordinator), "--chain", "acme",
        "--control-port", str(port), "--heartbeat-seconds", "1",
    )  # fmt: skip
    home = CoordinatorHome(coordinator)
    stores: dict[str, Path] = {}
    for index, name in enumerate(STORES):
        folder = tmp_path / name
        if index < 2:  # the member shops at north and south, never at east
            shutil.copytree(enrolled, folder)
        else:
            _invoke(store_app, "init", "--store", str(folder))
        config = read_config(StorePaths(folder))
        write_config(StorePaths(folder), type(config)(**{**vars(config), "store_id": name}))
        join = ["join", "--store", str(folder), "--ca", str(home.tls.ca_certificate)]
        _invoke(store_app, *join, "--superlink", "127.0.0.1:9")
        _invoke(coordinator_app, "register-store", str(folder / "node.pub"), "--name", name,
                "--dir", str(coordinator))  # fmt: skip
        _invoke(store_app, *join, "--superlink", "127.0.0.1:9",
                "--control-plane", f"127.0.0.1:{port}",
                "--certificate", str(home.store_certificate(name)))  # fmt: skip
        stores[name] = folder
    assert MEMBER in _members(stores["store-north"]) and not _members(stores["store-east"])

    serve_coordinator = ["coordinator", "serve", "--dir", str(coordinator), "--no-superlink",
                         "--host", "127.0.0.1"]  # fmt: skip
    processes.start("coordinator", *serve_coordinator)
    for name in STORES[:2]:
        processes.start(name, "store", "serve", "--store", str(stores[name]),
                        "--calibration-people", "10")  # fmt: skip

    def online(names: tuple[str, ...]) -> Callable[[], bool]:
        def check() -> bool:
            try:
                listed = _admin(coordinator, "stores")["stores"]
            except (AssertionError, json.JSONDecodeError):
                return False
            up = {s["name"] for s in listed if s["online"]}  # type: ignore[index, union-attr]
            return set(names) <= up

        return check

    _wait_for(online(STORES[:2]), 90, "north and south online", processes)

    # -- the erasure, store-east offline --------------------------------------------------
    erasure = _admin(coordinator, "erase", MEMBER)
    request_id = str(erasure["request_id"])

    def answered(count: int) -> Callable[[], bool]:
        def check() -> bool:
            found = _admin(coordinator, "erasures")["erasures"]
            [mine] = [e for e in found if e["request_id"] == request_id]  # type: ignore[index, union-attr]
            return sum(s["state"] != "pending" for s in mine["stores"]) >= count  # type: ignore[index]

        return check

    _wait_for(answered(2), 60, "north and south to answer", processes)
    assert MEMBER not in _members(stores["store-north"])
    assert MEMBER not in _members(stores["store-south"])

    # The coordinator restarts; store-east comes back while it is down.
    assert processes.stop("coordinator") == 0
    processes.start("store-east", "store", "serve", "--store", str(stores["store-east"]),
                    "--calibration-people", "10")  # fmt: skip
    time.sleep(2)
    processes.start("coordinator", *serve_coordinator)
    _wait_for(online(STORES), 90, "all three stores online", processes)
    _wait_for(answered(3), 60, "store-east to answer", processes)
    [done] = [
        e for e in _admin(coordinator, "erasures")["erasures"] if e["request_id"] == request_id
    ]  # type: ignore[index, union-attr]
    assert done["complete"] is True  # type: ignore[index]
    receipts = {s["store"]: s for s in done["stores"]}  # type: ignore[index, union-attr]
    assert set(receipts) == set(STORES)
    assert all(r["state"] == "erased" and r["receipt_verified"] for r in receipts.values())
    # The receipt of a store the member never visited reads like the others.
    shapes = {tuple(sorted(json.loads(r["receipt_json"]))) for r in receipts.values()}
    assert len(shapes) == 1

    # -- a signed model version rolls out --------------------------------------------------
    key = load_model_signing_key(home.tls)
    changed = {**pretrained, "conv3.weight": pretrained["conv3.weight"] * 1.01}
    good = save_model_version(home.models_dir, changed, {}, {1: {"loss": 0.5}}, signing_key=key)
    rollout = _admin(coordinator, "promote", str(good.version))
    assert rollout["stores_commanded"] == 3

    def running(version: int, names: tuple[str, ...]) -> Callable[[], bool]:
        def check() -> bool:
            models = _admin(coordinator, "models")["models"]
            [model] = [m for m in models if m["version"] == version]  # type: ignore[index, union-attr]
            return set(names) <= set(model["stores_running"])  # type: ignore[index]

        return check

    _wait_for(running(good.version, STORES), 180, "every store on the promoted model", processes)

    # -- a model tampered on its way is refused ------------------------------------------
    processes.stop("store-east")
    for name in STORES[:2]:
        processes.stop(name)
    other = {**pretrained, "conv3.weight": pretrained["conv3.weight"] * 0.99}
    bad = save_model_version(home.models_dir, other, {}, {1: {"loss": 0.4}}, signing_key=key)
    _admin(coordinator, "promote", str(bad.version))
    bad.path.write_bytes(bad.path.read_bytes()[:-64] + bytes(64))  # altered after promotion
    processes.start("store-east", "store", "serve", "--store", str(stores["store-east"]),
                    "--calibration-people", "10")  # fmt: skip

    def refused() -> bool:
        return bool(_admin(coordinator, "audit", "--action", "model-refused")["records"])

    _wait_for(refused, 60, "store-east to refuse the tampered model", processes)
    [record] = _admin(coordinator, "audit", "--action", "model-refused")["records"]  # type: ignore[misc]
    assert record["actor"] == "store:store-east"
    stores_now = {s["name"]: s for s in _admin(coordinator, "stores")["stores"]}  # type: ignore[union-attr]
    assert stores_now["store-east"]["health"]["model_version"] == good.version
    assert processes.stop("store-east") == 0
    assert processes.stop("coordinator") == 0
    for name in STORES:
        assert MEMBER not in processes.log(name)
