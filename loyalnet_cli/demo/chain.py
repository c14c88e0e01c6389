"""The demo's chain, running as a real chain runs: a coordinator and its stores, on 127.0.0.1.

Every part is the command an operator would start, in a process of its own:

- ``loyalnet coordinator serve``: the control plane (``loyalnet admin``, the console) and
  Flower's SuperLink;
- per store, ``loyalnet store serve`` (heartbeats, the chain's erasures and model adoptions,
  signed receipts) and its SuperNode (``loyalnet-supernode``: federated training).

The stores are admitted as ``loyalnet coordinator register-store`` and ``loyalnet store join``
admit them: the chain's CA issues each store's certificate for the store's own node key, the
SuperLink registers that key, and the store keeps the chain's CA and model-signing key.

Each process leads its own process group, logs into ``logs/`` and is stopped by pid (SIGTERM,
then SIGKILL for what is left) when the ``with`` block ends, by an error or Ctrl-C included.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from coordinator.admin_client import AdminClient, AdminError
from coordinator.errors import CoordinatorError
from coordinator.flwr_cli import CONNECTION
from coordinator.home import CoordinatorHome, create_coordinator_home
from coordinator.processes import LOCALHOST, LocalFederation, ManagedProcess, free_port
from coordinator.store_admission import admit_to_control_plane
from loyalnet.chain.v1 import chain_pb2
from loyalnet.errors import LoyalnetError
from store_node.config import StorePaths
from store_node.joining import join_federation
from store_node.node_identity import create_node_identity

Step = Callable[[str], None]

HEARTBEAT_SECONDS = 5
"""The demo's stores heartbeat every 5 s (a chain's default is 10): the console stays live."""
START_TIMEOUT_SECONDS = 180.0
"""How long a process may take to be ready; each imports torch, on 2 busy cores."""
POLL_SECONDS = 5.0


@dataclass(frozen=True)
class RunOutcome:
    """A finished training run, as the coordinator's registry and SuperLink saw it.

    Attributes:
        run: the registry's record (status, rounds with their aggregate metrics, version).
        inbound_bytes: every byte the SuperLink received in the run, requests included.
        elapsed_seconds: the run's wall time on the SuperLink.
    """

    run: chain_pb2.TrainingRun
    inbound_bytes: int
    elapsed_seconds: float


@dataclass
class DemoChain:
    """A coordinator folder in ``root / "coordinator"`` and the processes of the chain.

    Attributes:
        root: the demo's working folder; logs go to ``root / "logs"``.
        home: the coordinator's folder (made by :meth:`create`).
        processes: the ``coordinator serve`` and ``store serve`` processes, by name.
    """

    root: Path
    home: CoordinatorHome
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    _supernodes: LocalFederation | None = None

    @classmethod
    def create(cls, root: Path, chain: str = "demo chain") -> Self:
        """Make the coordinator folder, with free ports for the SuperLink and control plane."""
        superlink_port = free_port()
        control_port = free_port()
        while control_port == superlink_port:
            control_port = free_port()
        home = create_coordinator_home(
            root / "coordinator",
            chain,
            superlink_port=superlink_port,
            control_port=control_port,
            heartbeat_seconds=HEARTBEAT_SECONDS,
        )
        return cls(root.resolve(), home)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def console_command(self) -> str:
        """The command that opens the admins' console on this chain."""
        return f"loyalnet admin --dir {self.home.folder.resolve()} console"

    def admin(self) -> AdminClient:
        """A client of the control plane with the chain's admin certificate."""
        return AdminClient.for_home(self.home)

    def admit(self, name: str, store_dir: Path) -> None:
        """Admit the store in ``store_dir`` under ``name``: node key, certificate, registry.

        Run before :meth:`start_coordinator`; the SuperLink registration follows in
        :meth:`join`, once the SuperLink runs.
        """
        identity = create_node_identity(store_dir)
        kept, _ = self.home.admit_store(name, identity.public_key)
        admit_to_control_plane(self.home, name, kept, None)

    def start_coordinator(self) -> None:
        """Start ``loyalnet coordinator serve``; return once its control plane answers."""
        self._start(
            "coordinator",
            ["coordinator", "serve", "--dir", str(self.home.folder), "--host", LOCALHOST],
        )

        def answering() -> bool:
            self._check_running()
            try:
                with self.admin() as admin:
                    admin.whoami()
            except AdminError:
                return False
            return True

        self._wait(answering, "the coordinator did not answer", START_TIMEOUT_SECONDS)

    def join(self, name: str, store_dir: Path, calibration_people: int) -> None:
        """Register the store with the SuperLink, join it to the chain, start its processes."""
        config = self.home.read_config()
        self.home.local_federation().cli.register_supernode(self.home.store_key(name), name)
        join_federation(
            StorePaths(store_dir),
            self.home.tls.ca_certificate,
            f"{LOCALHOST}:{config.superlink_port}",
            self.home.tls.model_signing_public_key,
            control_plane=f"{LOCALHOST}:{config.control_port}",
            certificate_file=self.home.store_certificate(name),
        )
        if self._supernodes is None:
            self._supernodes = LocalFederation(
                self.root / "supernodes", tls=self.home.tls, startup_timeout_seconds=120.0
            )
        self._supernodes.start_supernode(
            name,
            store_dir,
            superlink_address=f"{LOCALHOST}:{config.superlink_port}",
            node_config={"threads": 1},
        )
        self._start(
            name,
            [
                "store",
                "serve",
                "--store",
                str(store_dir),
                "--calibration-people",
                str(calibration_people),
            ],
            # Three stores re-calibrate at once after a rollout: with torch's default of one
            # thread per core each, they fought over two cores (a third of the time in the
            # kernel) and took 13 minutes instead of about 4.
            threads=1,
        )

    def wait_for_stores(self, names: Iterable[str]) -> None:
        """Return once every store is online on the control plane and its SuperNode on the
        SuperLink."""
        wanted = set(names)
        cli = self.home.local_federation().cli

        def online() -> bool:
            self._check_running()
            try:
                with self.admin() as admin:
                    seen = {store.name for store in admin.stores() if store.online}
                # Asking the SuperLink starts a `flwr` process (about 0.7 s of CPU): only
                # once the control plane sees every store.
                if not wanted <= seen:
                    return False
                nodes = cli.supernodes()
            except (AdminError, CoordinatorError):
                return False
            return sum(1 for node in nodes if node.get("status") == "online") >= len(wanted)

        self._wait(online, "the stores did not come online", START_TIMEOUT_SECONDS)

    def train(
        self,
        rounds: int,
        *,
        strategy: str,
        local_epochs: int,
        learning_rate: float,
        stores: int,
        update_encoding: str = "",
    ) -> int:
        """Start a training run through the control plane (as ``loyalnet admin train`` does)."""
        with self.admin() as admin:
            run = admin.train(
                rounds,
                strategy=strategy,
                local_epochs=local_epochs,
                learning_rate=learning_rate,
                min_stores=stores,
                update_encoding=update_encoding,
            )
        return run.run_id

    def follow(self, run_id: int, step: Step, timeout_seconds: float) -> RunOutcome:
        """Wait for run ``run_id`` to end, telling ``step`` each round as it ends.

        Raises:
            LoyalnetError: it failed, or did not end in ``timeout_seconds``.
        """
        started = time.monotonic()
        rounds_done = -1
        while True:
            self._check_running()
            with self.admin() as admin:
                run = next((r for r in admin.runs() if r.run_id == run_id), None)
            if run is None:
                raise LoyalnetError(f"the coordinator lost training run {run_id}.")
            if run.status != "running":
                break
            if time.monotonic() - started > timeout_seconds:
                raise LoyalnetError(
                    f"training run {run_id} did not end in {timeout_seconds:.0f} s; the "
                    f"processes' logs are in {self.root / 'logs'}."
                )
            if len(run.rounds) != rounds_done:
                rounds_done = len(run.rounds)
                step(
                    f"training run {run_id}: {rounds_done} of {run.rounds_planned} round(s) "
                    f"done after {time.monotonic() - started:.0f} s"
                )
            time.sleep(POLL_SECONDS)
        if run.status != "completed" or not run.model_version:
            raise LoyalnetError(
                f"training run {run_id} ended as {run.status}: {run.message or 'no details'}; "
                f"the processes' logs are in {self.root / 'logs'} and {self.home.flower_dir}."
            )
        flower = self._newest_flower_run()
        traffic = flower.get("network-traffic", {})
        return RunOutcome(
            run,
            int(traffic.get("inbound-bytes", 0)),
            float(flower.get("elapsed", 0.0)),
        )

    def roll_out(self, version: int, names: Iterable[str], timeout_seconds: float) -> None:
        """Promote ``version`` and return once every store recognises with it.

        Each store downloads it, checks its signature, hash and architecture, re-computes its
        templates and re-calibrates its threshold, then reports the version in its heartbeat.
        """
        wanted = set(names)
        with self.admin() as admin:
            admin.promote(version)

        def adopted() -> bool:
            self._check_running()
            try:
                with self.admin() as admin:
                    stores = admin.stores()
            except AdminError:
                return False
            running = {s.name for s in stores if s.online and s.health.model_version == version}
            return wanted <= running

        self._wait(adopted, f"the stores did not adopt v{version}", timeout_seconds)

    def stop(self) -> None:
        """Stop every process: the stores first, the coordinator last."""
        if self._supernodes is not None:
            self._supernodes.stop()
        for process in reversed(list(self.processes.values())):
            process.stop()

    def _start(self, name: str, arguments: list[str], threads: int | None = None) -> None:
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        with log_path.open("ab") as log_file:
            popen = subprocess.Popen(
                [sys.executable, "-m", "loyalnet_cli", *arguments],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "PYTHONUNBUFFERED": "1",
                    **({"LOYALNET_THREADS": str(threads)} if threads is not None else {}),
                },
                cwd=self.root,
                # Its own process group: stopped with the children it starts (the SuperLink).
                start_new_session=True,
            )
        self.processes[name] = ManagedProcess(name, popen, log_path, port=0)

    def _check_running(self) -> None:
        for process in self.processes.values():
            if not process.running():
                raise LoyalnetError(f"{process.exit_description()}:\n{process.log_tail(15)}")

    def _wait(self, ready: Callable[[], bool], failure: str, timeout_seconds: float) -> None:
        waiting = Retrying(
            retry=retry_if_result(lambda done: not done),
            stop=stop_after_delay(timeout_seconds),
            wait=wait_fixed(1.0),
        )
        try:
            waiting(ready)
        except RetryError:
            raise LoyalnetError(
                f"{failure} within {timeout_seconds:.0f} s; the logs are in {self.root / 'logs'}."
            ) from None

    def _newest_flower_run(self) -> dict[str, Any]:
        try:
            runs = self.home.local_federation().cli.json("ls", CONNECTION).get("runs", [])
        except CoordinatorError:
            return {}
        dicts = [run for run in runs if isinstance(run, dict)]
        return max(dicts, key=lambda run: int(run.get("run-id", 0)), default={})
