"""Local Flower processes: a SuperLink, one SuperNode per store, and runs submitted with ``flwr``.

:class:`LocalFederation` is a context manager over a working folder; whatever it started is
stopped when the ``with`` block ends, by an exception or Ctrl-C included::

    with LocalFederation(coordinator_dir / "flower", tls=coordinator_tls) as federation:
        federation.start_superlink()
        for name, store in stores.items():
            federation.register_store(store / "node.pub", name)  # once: kept in the database
            federation.start_supernode(name, store)
        federation.wait_for_supernodes(len(stores))
        run_id = federation.submit_run(write_flower_app(coordinator_dir))
        status = federation.wait_for_run(run_id, timeout_seconds=3600)

Secure by default: the SuperLink serves TLS with the coordinator's certificate
(:class:`~coordinator.pki.CoordinatorTls`; without one, a throwaway CA is made in
``workdir/tls``) and admits only SuperNodes whose public key was registered
(``--enable-supernode-auth``); each SuperNode trusts the chain's CA certificate and signs its
requests with its store's private key (``node_key`` in the store folder, written by
``loyalnet store join``); the ``flwr`` CLI connects with the CA certificate too. A SuperNode
whose key is not registered is refused: it logs Flower's exit code 305 and exits (status 1).
Registrations and runs live in the SuperLink's SQLite database, so they survive
:meth:`LocalFederation.restart_superlink`.
``insecure=True`` runs everything without TLS and without SuperNode authentication: for
tests and debugging only.

Each process starts in a session of its own (``start_new_session``), so it and the processes
it spawns (a SuperNode's ``flower-superexec``, a ``flwr-clientapp`` per message) form one
process group, stopped together: SIGTERM, a grace period, then SIGKILL for whatever is left.
The SuperLink starts its ``flower-superexec`` in a session of its own, but that one watches
its parent and exits with it. A terminal's Ctrl-C does not reach those groups; the context
manager's exit does.

Ports are picked free at run time (no fixed 8000 / 9094, so federations and tests do not
clash) unless ``superlink_port`` is given; a restarted SuperLink keeps its port. Runtime
dependency installation is disabled: loyalnet is installed where the apps run. Each process
has its own ``FLWR_HOME`` in the working folder (a SuperNode stands for a store on its own
machine), update checks and telemetry are off. Readiness is polled with tenacity: a port that
accepts connections, SuperNodes listed online by the SuperLink, a run finished.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from coordinator.errors import FlowerProcessError
from coordinator.flwr_cli import CONNECTION, FlwrCli, flower_environment
from coordinator.pki import CoordinatorTls, create_coordinator_tls
from coordinator.toml_text import TomlScalar, toml_table

LOCALHOST = "127.0.0.1"
NODE_PRIVATE_KEY_NAME = "node_key"
"""The store's SuperNode private key in its folder (``store_node.node_identity`` writes it)."""
REFUSED_EXIT_CODE = 305
"""The Flower exit code a SuperNode logs when it cannot connect, e.g. with an unregistered
key (the process itself exits with status 1)."""
SUPERNODE_COMMAND = "loyalnet-supernode"
"""A store's SuperNode: ``flower-supernode`` that refuses app bundles other than loyalnet's
(``store_node.app_guard``; named, not imported: the coordinator imports no store code)."""
_FLOWER_EXIT_CODE = re.compile(r"Exit Code: (\d+)")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass
class ManagedProcess:
    """A Flower process this module started, leader of its own process group."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int
    stopped: bool = False
    """True once this module stopped or killed it (so its exit was no failure)."""
    exit_reported: bool = False
    """True once its unexpected exit was raised as an error (it is not raised again)."""

    @property
    def pid(self) -> int:
        """The process id, also its process group's id."""
        return self.popen.pid

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>`` of the API it serves."""
        return f"{LOCALHOST}:{self.port}"

    def running(self) -> bool:
        """True while the group's leader has not exited."""
        return self.popen.poll() is None

    def stop(self, grace_seconds: float = 15.0) -> None:
        """SIGTERM the group, wait up to ``grace_seconds`` for the leader, then SIGKILL the rest.

        The grace period lets a SuperNode tell the SuperLink it leaves and a SuperLink close
        its database; the SIGKILL catches children that outlive their parent.
        """
        self.stopped = True
        if self.running():
            _signal_group(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace_seconds)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole group at once, as a crash or a power cut would end it."""
        self.stopped = True
        _signal_group(self.pid, signal.SIGKILL)
        self.popen.wait()

    def flower_exit_code(self) -> int | None:
        """The code Flower logged when it gave up (``Exit Code: 305``), if it did.

        Flower's processes exit with status 1 on any error; the reason's code is in the log.
        """
        codes = _FLOWER_EXIT_CODE.findall(self.log_tail(200))
        return int(codes[-1]) if codes else None

    def exit_description(self) -> str:
        """How it ended, with the likely cause of Flower's connection failure (code 305)."""
        text = f"{self.name} exited with code {self.popen.returncode}"
        flower_code = self.flower_exit_code()
        if flower_code is not None:
            text += f", Flower exit code {flower_code}"
        if flower_code == REFUSED_EXIT_CODE:
            text += (
                " (it could not connect to the SuperLink: is the store's public key registered "
                "with `loyalnet coordinator register-store`, and does it trust the chain's CA?)"
            )
        return text

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of its output."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class RunStatus:
    """A run as the SuperLink reports it (``flwr ls --run-id``).

    Attributes:
        run_id: the run.
        status: ``pending``, ``starting``, ``running`` or ``finished:completed`` /
            ``finished:failed`` / ``finished:stopped``.
        details: why it failed, when it did.
        elapsed_seconds: how long it ran.
        inbound_bytes: bytes the SuperLink received for the run (replies from the stores).
        outbound_bytes: bytes the SuperLink sent for the run (messages to the stores).
    """

    run_id: int
    status: str
    details: str
    elapsed_seconds: float
    inbound_bytes: int
    outbound_bytes: int

    @property
    def finished(self) -> bool:
        """True once the run has ended, however it ended."""
        return self.status.startswith("finished")

    @property
    def completed(self) -> bool:
        """True when the run ended without an error."""
        return self.status == "finished:completed"


@dataclass
class LocalFederation:
    """A SuperLink and SuperNodes on this machine, run from ``workdir``; see the module doc.

    Attributes:
        workdir: holds the SuperLink's database, the logs and each process's FLWR_HOME.
        tls: the coordinator's TLS material (``loyalnet coordinator init`` makes it); None:
            a CA and SuperLink certificate are created in ``workdir/tls`` on first start.
        insecure: no TLS and no SuperNode authentication, every SuperNode admitted. For tests
            and debugging only; never where a store's data is real.
        superlink_port: the SuperLink's port (Fleet, Control and runtime APIs); None: a free
            one, picked at the first start and kept across restarts.
        bin_dir: where the Flower commands are; default: beside this Python interpreter.
        startup_timeout_seconds: how long a process may take to become ready.
        superlink: the SuperLink, once started.
        supernodes: the SuperNodes started, by name.
    """

    workdir: Path
    tls: CoordinatorTls | None = field(default=None, kw_only=True)
    insecure: bool = field(default=False, kw_only=True)
    superlink_port: int | None = field(default=None, kw_only=True)
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)
    startup_timeout_seconds: float = 60.0
    superlink: ManagedProcess | None = field(default=None, init=False)
    supernodes: dict[str, ManagedProcess] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        # Absolute: the processes run in workdir, and the paths are handed to them.
        self.workdir = Path(self.workdir).resolve()
        if self.insecure and self.tls is not None:
            raise FlowerProcessError(
                "a LocalFederation is either insecure or uses the coordinator's TLS; "
                "drop insecure=True (it is for tests and debugging only)."
            )

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
    def flwr_home(self) -> Path:
        """The FLWR_HOME of the SuperLink and the ``flwr`` CLI (its config.toml is here)."""
        return self.workdir / "flwr-home"

    @property
    def database(self) -> Path:
        """The SuperLink's SQLite state: registered SuperNodes, runs, messages."""
        return self.workdir / "superlink.db"

    @property
    def cli(self) -> FlwrCli:
        """The ``flwr`` CLI with this federation's connection."""
        return FlwrCli(self.flwr_home, self.bin_dir)

    def environment(self, flwr_home: Path | None = None) -> dict[str, str]:
        """The environment Flower processes and commands run with."""
        return flower_environment(self.bin_dir, flwr_home or self.flwr_home)

    def start_superlink(self) -> ManagedProcess:
        """Start the SuperLink (SQLite state; TLS and SuperNode auth unless insecure) and point
        the ``flwr`` CLI at it.

        Raises:
            FlowerProcessError: one is already running, or it did not start listening.
        """
        if self.superlink is not None and self.superlink.running():
            raise FlowerProcessError("this federation's SuperLink is already running.")
        port = self.superlink_port or free_port()
        self.superlink_port = port
        self.workdir.mkdir(parents=True, exist_ok=True)
        tls = None if self.insecure else self._server_tls()
        self.cli.configure(f"{LOCALHOST}:{port}", None if tls is None else tls.ca_certificate)
        if tls is None:
            security = ["--insecure"]
        else:
            security = [
                "--ssl-ca-certfile",
                str(tls.ca_certificate.resolve()),
                "--ssl-certfile",
                str(tls.server_certificate.resolve()),
                "--ssl-keyfile",
                str(tls.server_key.resolve()),
                "--enable-supernode-auth",
            ]
        command = [
            str(self.bin_dir / "flower-superlink"),
            *security,
            "--database",
            str(self.database),
            "--host",
            LOCALHOST,
            "--port",
            str(port),
            "--disable-runtime-dependency-installation",
        ]
        self.superlink = self._start("superlink", command, port, self.flwr_home)
        return self.superlink

    def restart_superlink(self, grace_seconds: float = 15.0) -> ManagedProcess:
        """Stop the SuperLink and start it again: same database, port and certificates.

        Registered stores and past runs survive (they are in the database); SuperNodes keep
        running and reconnect on their own, retrying with back-off.

        Raises:
            FlowerProcessError: it was never started, or it did not start again.
        """
        if self.superlink is None:
            raise FlowerProcessError("start the SuperLink before restarting it.")
        self.superlink.stop(grace_seconds)
        self.superlink = None
        return self.start_superlink()

    def register_store(self, public_key: Path, name: str | None = None) -> int:
        """Admit the store whose SuperNode holds the private key of ``public_key`` (OpenSSH,
        ``node.pub``); return the node id the SuperLink gave it.

        The registration is kept in the SuperLink's database.

        Raises:
            StoreAlreadyRegisteredError: the key is registered already.
            FlowerProcessError: an insecure federation (it admits every SuperNode), no
                SuperLink, or the SuperLink refused the key.
        """
        if self.insecure:
            raise FlowerProcessError(
                "an insecure federation admits every SuperNode; registering a store's key "
                "needs the default, secure one."
            )
        self._require_superlink()
        return self.cli.register_supernode(public_key, name)

    def start_supernode(
        self,
        name: str,
        store_dir: Path,
        *,
        private_key: Path | None = None,
        root_certificates: Path | None = None,
        superlink_address: str | None = None,
        node_config: Mapping[str, TomlScalar] | None = None,
    ) -> ManagedProcess:
        """Start the SuperNode of the store in ``store_dir``.

        It runs as ``loyalnet-supernode``, Flower's ``flower-supernode`` with the store's app
        bundle check (``store_node.app_guard``): it runs only the ClientApp installed here and
        refuses, with an error reply, a bundle that carries code or names another app.

        Args:
            name: names its log and FLWR_HOME: letters, digits, '-' and '_'.
            store_dir: given to the ClientApp as node config ``store-dir``.
            private_key: the key it authenticates with; default the store's ``node_key``
                (``loyalnet store join`` makes it). Ignored when insecure.
            root_certificates: the CA certificate it trusts the SuperLink by; default this
                federation's. Ignored when insecure.
            superlink_address: where it connects; default this federation's SuperLink (a
                test may put a recording proxy in between).
            node_config: further node config values, e.g. ``{"threads": 1}``.

        Raises:
            FlowerProcessError: a bad or taken name, no SuperLink, no private key, or it
                did not start. (A SuperNode the SuperLink refuses starts, then exits with
                Flower's exit code 305; :meth:`wait_for_supernodes` reports it.)
        """
        if not _NAME.match(name) or name == "superlink" or name in self.supernodes:
            raise FlowerProcessError(f"SuperNode name {name!r} is invalid or already taken.")
        if superlink_address is None:
            if self.superlink is None:
                raise FlowerProcessError("start the SuperLink before the SuperNodes.")
            superlink_address = self.superlink.address
        security = ["--insecure"]
        if not self.insecure:
            security = self._supernode_security(name, store_dir, private_key, root_certificates)
        port = free_port()
        home = self.workdir / f"flwr-home-{name}"
        home.mkdir(parents=True, exist_ok=True)
        # A TOML file rather than a 'k="v"' argument: any path, quotes and spaces included.
        config_file = self.workdir / f"node-config-{name}.toml"
        values: dict[str, TomlScalar] = {"store-dir": str(Path(store_dir).resolve())}
        config_file.write_text(toml_table(None, {**values, **(node_config or {})}), "utf-8")
        command = [
            str(self.bin_dir / SUPERNODE_COMMAND),
            *security,
            "--superlink",
            superlink_address,
            "--port",
            str(port),
            "--node-config",
            str(config_file),
        ]
        process = self._start(name, command, port, home)
        self.supernodes[name] = process
        return process

    def supernode_list(self) -> list[dict[str, Any]]:
        """The SuperNodes the SuperLink knows (``flwr supernode ls``): node-id, status, ..."""
        self._require_superlink()
        return self.cli.supernodes()

    def wait_for_supernodes(self, count: int, timeout_seconds: float = 60.0) -> None:
        """Return once the SuperLink lists ``count`` SuperNodes online.

        Raises:
            FlowerProcessError: fewer after ``timeout_seconds``, the SuperLink died, or a
                SuperNode started here exited on its own (e.g. refused: code 305).
        """

        def online() -> int:
            for process in self.supernodes.values():
                if not (process.stopped or process.exit_reported or process.running()):
                    process.exit_reported = True
                    raise FlowerProcessError(
                        f"{process.exit_description()}:\n{process.log_tail(12)}"
                    )
            nodes = self.supernode_list()
            return sum(1 for node in nodes if node.get("status") == "online")

        waiting = Retrying(
            retry=retry_if_result(lambda seen: seen < count),
            stop=stop_after_delay(timeout_seconds),
            wait=wait_fixed(1.0),
        )
        try:
            waiting(online)
        except RetryError as err:
            raise FlowerProcessError(
                f"only {err.last_attempt.result()} of {count} SuperNodes came online within "
                f"{timeout_seconds:.0f} s; see the logs in {self.workdir / 'logs'}."
            ) from None

    def submit_run(self, app_dir: Path, run_config: Mapping[str, TomlScalar] | None = None) -> int:
        """Start a run of the Flower app in ``app_dir`` and return its id (it runs on its own).

        Args:
            app_dir: a folder with the app's pyproject.toml (``coordinator.flower_app``).
            run_config: values overriding the app's ``[tool.flwr.app.config]``.

        Raises:
            FlowerProcessError: the SuperLink refused the run.
        """
        self._require_superlink()
        arguments = ["run", str(app_dir), CONNECTION]
        if run_config:
            # A TOML file again: `-c` splits 'k=v' pairs on spaces outside quotes only.
            overrides = self.workdir / f"run-config-{os.urandom(4).hex()}.toml"
            overrides.write_text(toml_table(None, run_config), encoding="utf-8")
            arguments += ["--run-config", str(overrides)]
        answer = self.flwr_json(*arguments)
        run_id = answer.get("run-id")
        if not answer.get("success") or run_id is None:
            raise FlowerProcessError(f"the SuperLink did not start the run: {answer}")
        return int(run_id)

    def run_status(self, run_id: int) -> RunStatus:
        """What the SuperLink says about run ``run_id`` now."""
        runs = self.flwr_json("ls", CONNECTION, "--run-id", str(run_id)).get("runs", [])
        if not runs:
            raise FlowerProcessError(f"the SuperLink knows no run {run_id}.")
        run = runs[0]
        traffic = run.get("network-traffic", {})
        details = run.get("status-details", "")
        return RunStatus(
            run_id=run_id,
            status=str(run.get("status", "")),
            details="" if details == "N/A" else str(details),
            elapsed_seconds=float(run.get("elapsed", 0.0)),
            inbound_bytes=int(traffic.get("inbound-bytes", 0)),
            outbound_bytes=int(traffic.get("outbound-bytes", 0)),
        )

    def wait_for_run(
        self, run_id: int, timeout_seconds: float, poll_seconds: float = 3.0
    ) -> RunStatus:
        """Return the run's final status once it has finished, completed or not.

        Each poll runs the ``flwr`` CLI, a Python process of its own: on a small machine
        polling much more often than the SuperNodes do (every 3 s) slows the run down.

        Raises:
            FlowerProcessError: still running after ``timeout_seconds``, or the SuperLink died.
        """

        def poll() -> RunStatus:
            self._require_superlink()
            return self.run_status(run_id)

        waiting = Retrying(
            retry=retry_if_result(lambda status: not status.finished),
            stop=stop_after_delay(timeout_seconds),
            wait=wait_fixed(poll_seconds),
        )
        try:
            return waiting(poll)
        except RetryError as err:
            raise FlowerProcessError(
                f"run {run_id} is still {err.last_attempt.result().status} after "
                f"{timeout_seconds:.0f} s; stop it with `flwr stop {run_id}`."
            ) from None

    def run_log(self, run_id: int) -> str:
        """The run's ServerApp log, as far as it has come."""
        done = self._flwr("log", str(run_id), CONNECTION, "--show")
        return done.stdout

    def flwr_json(self, *arguments: str) -> dict[str, Any]:
        """Run ``flwr ARGUMENTS --format json`` against this federation and parse its answer.

        Raises:
            FlowerProcessError: the command failed or did not answer JSON.
        """
        return self.cli.json(*arguments)

    def stop(self) -> None:
        """Stop every process started here: the SuperNodes first (so they leave cleanly)."""
        for process in [*self.supernodes.values(), self.superlink]:
            if process is not None:
                process.stop()

    def _flwr(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return self.cli.run(*arguments)

    def _server_tls(self) -> CoordinatorTls:
        """The coordinator's TLS material, or a throwaway CA in ``workdir/tls`` made once."""
        if self.tls is None:
            own = CoordinatorTls(self.workdir / "tls")
            self.tls = own if own.exists() else create_coordinator_tls(own.folder, "local")
        if not self.tls.exists():
            raise FlowerProcessError(
                f"{self.tls.folder} lacks the coordinator's certificates; create them with "
                "`loyalnet coordinator init`."
            )
        return self.tls

    def _supernode_security(
        self,
        name: str,
        store_dir: Path,
        private_key: Path | None,
        root_certificates: Path | None,
    ) -> list[str]:
        """The TLS and authentication arguments of a secure SuperNode."""
        key = private_key or Path(store_dir) / NODE_PRIVATE_KEY_NAME
        if not key.is_file():
            raise FlowerProcessError(
                f"store {name} has no SuperNode key at {key}; create it with `loyalnet store "
                "join`, then register its node.pub with `loyalnet coordinator register-store`."
            )
        trusted = root_certificates or self._server_tls().ca_certificate
        return [
            "--root-certificates",
            str(Path(trusted).resolve()),
            "--auth-supernode-private-key",
            str(key.resolve()),
        ]

    def _start(self, name: str, command: list[str], port: int, home: Path) -> ManagedProcess:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        with log_path.open("ab") as log_file:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.environment(home),
                cwd=self.workdir,
                start_new_session=True,  # its own process group: see the module docstring
            )
        process = ManagedProcess(name, popen, log_path, port)
        try:
            _wait_until_listening(process, self.startup_timeout_seconds)
        except BaseException:
            process.stop(grace_seconds=5.0)
            raise
        return process

    def _require_superlink(self) -> None:
        if self.superlink is None or not self.superlink.running():
            tail = self.superlink.log_tail() if self.superlink is not None else ""
            raise FlowerProcessError(f"the SuperLink is not running.\n{tail}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOCALHOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_listening(process: ManagedProcess, timeout_seconds: float) -> None:
    """Return once ``process`` accepts TCP connections on its port.

    Raises:
        FlowerProcessError: it exited, or did not listen within ``timeout_seconds``.
    """

    def listening() -> bool:
        if not process.running():
            raise FlowerProcessError(f"{process.exit_description()}:\n{process.log_tail()}")
        try:
            with socket.create_connection((LOCALHOST, process.port), timeout=1.0):
                return True
        except OSError:
            return False

    waiting = Retrying(
        retry=retry_if_result(lambda ready: not ready),
        stop=stop_after_delay(timeout_seconds),
        wait=wait_fixed(0.2),
    )
    try:
        waiting(listening)
    except RetryError:
        raise FlowerProcessError(
            f"{process.name} did not listen on port {process.port} within "
            f"{timeout_seconds:.0f} s:\n{process.log_tail()}"
        ) from None


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group has already exited
        os.killpg(pgid, signum)
