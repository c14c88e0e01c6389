"""``loyalnet bench control-plane``: how many heartbeating stores one coordinator carries.

What it measures: N simulated stores heartbeat every ``interval`` seconds against a real
coordinator (``loyalnet coordinator serve --no-superlink``, a subprocess of its own) on this
machine, over real mutual TLS with a certificate per store from the chain's CA. Over a
measured window it reports the heartbeats answered per second, their latency (p50, p99, max,
from the call's start to its reply, as the store sees it; a heartbeat unanswered within
min(interval, 5 s) is an error, not a latency: DEADLINE_EXCEEDED, or CANCELLED when the
coordinator's own deadline timer fired first), the errors, and the coordinator's
CPU (``/proc/PID/stat`` utime + stime over the window, in percent of one core) and peak
memory (``VmHWM``). The clients' own CPU and how late their event loops started calls are
reported too, because clients and coordinator share this machine's cores: a saturated
client inflates latency that the coordinator did not cause.

How:

1. A temporary coordinator folder (its own CA) and registry: a SQLite file, a fresh
   PostgreSQL database made on the local server and dropped afterwards, or any URL.
2. N stores: an ECDSA P-384 key each and a certificate from the chain's CA (in worker
   processes), registered in the registry one by one while the next keys are made, since the
   registry has no batch registration.
3. The coordinator starts; K agent processes each open one gRPC channel per store (a store's
   identity is its certificate, so stores cannot share a connection), at most
   :data:`CONNECT_CONCURRENCY` handshakes at a time per agent.
4. Once every channel is connected, every store heartbeats every interval from a random
   phase. The first interval is warm-up (caches filled, one heartbeat from each store); the
   next ``seconds`` are measured.
5. Everything started is stopped by its process id, the database dropped and the folder
   removed, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import math
import os
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import grpc
import psycopg
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from psycopg.conninfo import make_conninfo
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from sqlalchemy.engine import URL, make_url

from coordinator.errors import CoordinatorError
from coordinator.home import CoordinatorHome, create_coordinator_home
from coordinator.pki import CoordinatorTls, issue_store_certificate
from coordinator.registry import open_registry
from loyalnet.chain.v1 import chain_pb2, chain_pb2_grpc
from loyalnet.chain_tls import private_key_pem

if TYPE_CHECKING:
    from loyalnet.chain.v1.chain_pb2_grpc import StoreSyncAsyncStub

DEFAULT_POSTGRES_SERVER = "postgresql+psycopg://loyalnet:loyalnet@127.0.0.1:5432/postgres"
"""The server ``--database postgresql`` makes its temporary database on (its maintenance
database; the role needs CREATEDB)."""
MAX_STORES = 20_000
MAX_CLIENTS = 16
CONNECT_CONCURRENCY = 32
"""TLS handshakes in flight per agent: more only queue up in the coordinator's accept path
and make the first ones time out."""
CERTIFICATE_BATCH = 250
DEADLINE_CAP_SECONDS = 5.0
"""A heartbeat unanswered after min(interval, this) counts as an error (DEADLINE_EXCEEDED)."""
COORDINATOR_START_SECONDS = 120.0
COORDINATOR_STOP_SECONDS = 20.0
CHILD_EXIT_SECONDS = 20.0
ENROL_SECONDS = 120.0
ENROL_SECONDS_PER_STORE = 0.05
"""Bounds making and registering the stores (PostgreSQL registers one in ~7 ms)."""
CHANNEL_CLOSE_SECONDS = 10.0
GO_MARGIN_SECONDS = 1.0
"""Between telling the agents to start and the first heartbeat: the message must arrive."""
FILE_HEADROOM = 256
"""File descriptors a process needs besides one socket per store."""
CHANNEL_OPTIONS = (
    # Channels with equal arguments may share a connection through gRPC's global subchannel
    # pool; each store must hold its own, as real stores do.
    ("grpc.use_local_subchannel_pool", 1),
)
PR_SET_PDEATHSIG = 1
_CHILD_COMMAND = (
    "import sys; from coordinator.control_plane_bench import child_main; "
    "child_main(int(sys.argv[1]))"
)
_LISTENING = re.compile(r"control plane listening on 127\.0\.0\.1:(\d+)")


class BenchError(CoordinatorError):
    """The benchmark could not be set up or run; what was started is stopped already."""


# --- settings and result ------------------------------------------------------------------


@dataclass(frozen=True)
class BenchSettings:
    """What to run.

    Attributes:
        stores: simulated stores, each with its own key, certificate and connection.
        seconds: the measured window, after one interval of warm-up.
        interval_seconds: how often each store heartbeats (also the coordinator's setting).
        database: ``sqlite`` (a temporary file), ``postgresql`` (a temporary database on
            :data:`DEFAULT_POSTGRES_SERVER`), or a SQLAlchemy URL used as it is.
        clients: agent processes the stores are spread over.
        seed: seeds the stores' phases, so runs are comparable.
        postgres_server: where ``database="postgresql"`` makes its temporary database.
    """

    stores: int = 1000
    seconds: float = 60.0
    interval_seconds: int = 10
    database: str = "sqlite"
    clients: int = 2
    seed: int = 0
    postgres_server: str = DEFAULT_POSTGRES_SERVER

    def check(self) -> None:
        """Raises BenchError for values outside what this machine is asked to carry."""
        if not 1 <= self.stores <= MAX_STORES:
            raise BenchError(f"--stores must be in 1..{MAX_STORES}, got {self.stores}.")
        if not 1 <= self.seconds <= 3600:
            raise BenchError(f"--seconds must be in 1..3600, got {self.seconds}.")
        if not 1 <= self.interval_seconds <= 3600:
            raise BenchError(f"--interval must be in 1..3600, got {self.interval_seconds}.")
        if not 1 <= self.clients <= MAX_CLIENTS:
            raise BenchError(f"--clients must be in 1..{MAX_CLIENTS}, got {self.clients}.")

    @property
    def deadline_seconds(self) -> float:
        return min(float(self.interval_seconds), DEADLINE_CAP_SECONDS)

    @property
    def connect_seconds(self) -> float:
        """How long connecting every channel may take: handshakes cost ~ms of CPU each side."""
        return 60.0 + 0.03 * self.stores


@dataclass(frozen=True)
class BenchResult:
    """The measurement (:meth:`as_json`) and the processes it started (all gone by now)."""

    stores: int
    seconds: float
    interval_seconds: int
    database: str
    heartbeats_per_second: float
    expected_heartbeats_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    coordinator_cpu_percent: float
    coordinator_peak_rss_mb: float
    client_processes: int
    setup_seconds: float
    error_codes: dict[str, int]
    connect_failures: int
    connect_seconds: float
    register_ms_per_store: float
    coordinator_rss_before_mb: float
    client_cpu_percent: float
    machine_cpu_percent: float
    other_cpu_percent: float
    machine_cores: int
    client_late_p99_ms: float
    processes: tuple[int, ...] = field(default=(), compare=False)

    def as_json(self) -> dict[str, Any]:
        fields = asdict(self)
        del fields["processes"]
        return fields


Report = Callable[[str, float, float | None], None]
"""Told how far a phase is: (phase, done, total); total None: no known end."""


def _quiet(phase: str, done: float, total: float | None) -> None:
    return None


# --- the agents: store processes -----------------------------------------------------------


@dataclass(frozen=True)
class StoreIdentity:
    """What a simulated store holds: its name, its certificate and its key (PEM)."""

    name: str
    certificate_pem: bytes
    private_key_pem: bytes


@dataclass(frozen=True)
class AgentPlan:
    """One agent process's share of the stores and where to send their heartbeats."""

    index: int
    address: str
    ca_pem: bytes
    stores: tuple[StoreIdentity, ...]
    interval_seconds: float
    deadline_seconds: float
    connect_seconds: float
    seed: int


@dataclass(frozen=True)
class AgentReport:
    """An agent's tally over the measured window (latencies and lateness in seconds)."""

    latencies: bytes
    late: bytes
    errors: dict[str, int]


@dataclass
class _Tally:
    window_start: float
    window_end: float
    latencies: array[float] = field(default_factory=lambda: array("d"))
    late: array[float] = field(default_factory=lambda: array("d"))
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, scheduled: float, started: float, finished: float, error: str | None) -> None:
        if not self.window_start <= scheduled < self.window_end:
            return
        self.late.append(started - scheduled)
        if error is None:
            self.latencies.append(finished - started)
        else:
            self.errors[error] += 1

    def report(self) -> AgentReport:
        return AgentReport(self.latencies.tobytes(), self.late.tobytes(), dict(self.errors))


def _heartbeat_request() -> chain_pb2.HeartbeatRequest:
    # Numbers of the size a busy store reports, so the message is as large as a real one.
    return chain_pb2.HeartbeatRequest(
        health=chain_pb2.StoreHealth(
            members_enrolled=1843,
            consents_recognition=1790,
            consents_model_improvement=1204,
            has_visits=True,
            member_visits_today=412,
            unknown_visits_today=1377,
            model_version=3,
            model_sha256="ab" * 32,
            key_ok=True,
            gallery_ok=True,
            disk_free_bytes=81_234_567_890,
            software_version="0.1.0",
            outbox_pending=0,
        )
    )


async def _store_loop(
    stub: StoreSyncAsyncStub,
    request: chain_pb2.HeartbeatRequest,
    first: float,
    plan: AgentPlan,
    tally: _Tally,
) -> None:
    """Heartbeat from ``first`` every interval until the measured window ends."""
    scheduled = first
    while scheduled < tally.window_end:
        await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
        started = time.monotonic()
        error: str | None = None
        try:
            await stub.Heartbeat(request, timeout=plan.deadline_seconds)
        except grpc.aio.AioRpcError as err:
            error = err.code().name
        tally.add(scheduled, started, time.monotonic(), error)
        scheduled += plan.interval_seconds
        # A real agent that fell behind sends one heartbeat now, not every one it missed.
        while scheduled < time.monotonic() - plan.interval_seconds:
            scheduled += plan.interval_seconds


async def _connect_all(
    channels: Sequence[grpc.aio.Channel], plan: AgentPlan, connection: Connection
) -> int:
    """Connect every channel (bounded in flight and in time); return how many failed."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    give_up = time.monotonic() + plan.connect_seconds
    attempted = 0

    async def connect(channel: grpc.aio.Channel) -> bool:
        nonlocal attempted
        async with gate:
            try:
                await asyncio.wait_for(channel.channel_ready(), give_up - time.monotonic())
                return True
            except TimeoutError:
                return False
            finally:
                attempted += 1

    everything = asyncio.gather(*(connect(channel) for channel in channels))
    while not everything.done():
        await asyncio.wait({everything}, timeout=0.5)
        connection.send(("connecting", attempted))
    return sum(1 for ready in everything.result() if not ready)


async def _agent(plan: AgentPlan, connection: Connection) -> None:
    channels = [
        grpc.aio.secure_channel(
            plan.address,
            grpc.ssl_channel_credentials(plan.ca_pem, store.private_key_pem, store.certificate_pem),
            options=CHANNEL_OPTIONS,
        )
        for store in plan.stores
    ]
    try:
        failed = await _connect_all(channels, plan, connection)
        connection.send(("ready", failed))
        # Wait for the word from the parent without blocking the event loop's timers.
        got = await asyncio.to_thread(connection.poll, plan.connect_seconds + 60.0)
        if not got:
            return
        message = connection.recv()
        if message[0] != "go":
            return
        _, start, window_start, window_end = message
        tally = _Tally(window_start, window_end)
        request = _heartbeat_request()
        phases = random.Random(plan.seed)
        loops = [
            asyncio.create_task(
                _store_loop(
                    chain_pb2_grpc.StoreSyncStub(channel),
                    request,
                    start + phases.uniform(0.0, plan.interval_seconds),
                    plan,
                    tally,
                )
            )
            for channel in channels
        ]
        finished, unfinished = await asyncio.wait(
            loops, timeout=window_end - time.monotonic() + plan.deadline_seconds + 5.0
        )
        for loop in unfinished:
            loop.cancel()
        if unfinished:
            tally.errors["AGENT_TIMEOUT"] += len(unfinished)
        for loop in finished:
            if not loop.cancelled() and loop.exception() is not None:
                tally.errors[f"AGENT_{type(loop.exception()).__name__}"] += 1
        await asyncio.gather(*unfinished, return_exceptions=True)
        connection.send(("done", tally.report()))
    finally:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(channel.close(None) for channel in channels)),
                CHANNEL_CLOSE_SECONDS,
            )


def _raise_file_limit() -> None:
    """Lift this process's soft limit on open files to the hard one: a socket per store."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies, so none outlives a killed run."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def child_main(fd: int) -> None:
    """A child process of the benchmark: the first message on ``fd`` says what to do.

    An :class:`AgentPlan`: connect its stores' channels, heartbeat, send the tally back. An
    :class:`IssueJob`: make keys and certificates, sending them back in batches.
    """
    _die_with_parent()
    # Only the parent decides when the run stops; it stops its children itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    connection = Connection(fd)
    try:
        job = connection.recv()
        if isinstance(job, AgentPlan):
            _raise_file_limit()
            asyncio.run(_agent(job, connection))
        elif isinstance(job, IssueJob):
            _issue(job, connection)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone or stopped listening; nothing is left to report to
    finally:
        connection.close()


# --- setup: database, certificates, registry -------------------------------------------------


def _conninfo(url: URL) -> str:
    """A libpq connection string for a SQLAlchemy URL (psycopg cannot read ``+psycopg``)."""
    params: dict[str, str | int] = {"dbname": url.database or "postgres", "connect_timeout": 5}
    for key, value in (
        ("host", url.host),
        ("port", url.port),
        ("user", url.username),
        ("password", url.password),
    ):
        if value is not None:
            params[key] = value
    return make_conninfo("", **params)


def _temporary_postgres(server_url: str, cleanup: contextlib.ExitStack) -> str:
    """A fresh database on the server, dropped (even with connections open) on exit."""
    server = make_url(server_url)
    name = f"loyalnet_bench_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(_conninfo(server), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as err:
        raise BenchError(
            f"cannot make a database on {server.render_as_string(hide_password=True)} "
            f"({str(err).strip()}); start PostgreSQL with `bash scripts/postgres.sh` or pass "
            "--database URL."
        ) from err

    def drop() -> None:
        with psycopg.connect(_conninfo(server), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    cleanup.callback(drop)
    return server.set(database=name).render_as_string(hide_password=False)


def _database(
    settings: BenchSettings, work: Path, cleanup: contextlib.ExitStack
) -> tuple[str, str]:
    """The registry URL and its kind (``sqlite`` or ``postgresql``) for ``--database``."""
    choice = settings.database
    if choice == "sqlite":
        return f"sqlite:///{(work / 'registry.db').as_posix()}", "sqlite"
    if choice == "postgresql":
        return _temporary_postgres(settings.postgres_server, cleanup), "postgresql"
    try:
        kind = make_url(choice).get_backend_name()
    except Exception as err:
        raise BenchError(
            "--database must be sqlite, postgresql or a database URL such as "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE."
        ) from err
    return choice, kind


@dataclass(frozen=True)
class Issued:
    """A store made for the run: what its agent holds, and what the registry keeps."""

    identity: StoreIdentity
    public_key_pem: str
    certificate_sha256: str


@dataclass(frozen=True)
class IssueJob:
    """Make keys and certificates for ``names`` with the CA in ``tls_folder``."""

    tls_folder: str
    names: tuple[str, ...]


def _issue(job: IssueJob, connection: Connection) -> None:
    tls = CoordinatorTls(Path(job.tls_folder))
    batch: list[Issued] = []
    for name in job.names:
        key = ec.generate_private_key(ec.SECP384R1())
        certificate = issue_store_certificate(tls, name, key.public_key())
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        batch.append(
            Issued(
                StoreIdentity(name, certificate, private_key_pem(key)),
                public.decode("ascii"),
                hashlib.sha256(certificate).hexdigest(),
            )
        )
        if len(batch) == CERTIFICATE_BATCH:
            connection.send(("issued", batch))
            batch = []
    connection.send(("issued", batch))
    connection.send(("finished", None))


def _enrol(
    home: CoordinatorHome, url: str, count: int, work: Path, report: Report
) -> tuple[list[StoreIdentity], float]:
    """Make ``count`` stores and register them; return them and the ms one registration took.

    Child processes make keys and certificates while this one registers those made already:
    registration is one transaction per store (the registry has no batch call).
    """
    names = [f"bench-{number:05d}" for number in range(count)]
    workers = min(os.cpu_count() or 1, math.ceil(count / CERTIFICATE_BATCH))
    identities: list[StoreIdentity] = []
    registering = 0.0
    give_up = time.monotonic() + ENROL_SECONDS + ENROL_SECONDS_PER_STORE * count
    registry = open_registry(url)
    with contextlib.ExitStack() as children:
        makers = _Children.spawn(
            [IssueJob(str(home.tls.folder), tuple(names[i::workers])) for i in range(workers)],
            work,
            "keys",
            children,
        )
        children.callback(registry.close)
        report("keys, certificates, registry", 0, count)
        while len(makers.finished) < workers:
            for index, message in makers.messages(give_up, "keys and certificates"):
                if message[0] == "finished":
                    makers.finished.add(index)
                    continue
                for issued in message[1]:
                    began = time.perf_counter()
                    registry.register_store(
                        issued.identity.name,
                        issued.public_key_pem,
                        issued.certificate_sha256,
                        datetime.now(UTC),
                        actor="coordinator-bench",
                    )
                    registering += time.perf_counter() - began
                    identities.append(issued.identity)
                report("keys, certificates, registry", len(identities), count)
    if len(identities) != count:
        raise BenchError(f"{len(identities)} of {count} stores were made; the key makers erred.")
    identities.sort(key=lambda identity: identity.name)
    return identities, 1000.0 * registering / count


# --- processes: the coordinator and the agents -------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` so far."""
    # The command name in field 2 may hold spaces; the fields after its ")" do not.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU time every core of this machine spent on anything but idling, so far."""
    # First line of /proc/stat: cpu user nice system idle iowait irq softirq steal ...
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class _CpuClock:
    """CPU seconds used so far by the coordinator, the agents and the whole machine."""

    wall: float
    coordinator: float
    clients: float
    machine: float

    @classmethod
    def read(cls, coordinator: int, clients: Sequence[int]) -> _CpuClock:
        return cls(
            time.monotonic(),
            _cpu_seconds(coordinator),
            sum(_cpu_seconds(pid) for pid in clients),
            _machine_busy_seconds(),
        )

    def percent_since(self, earlier: _CpuClock) -> _CpuClock:
        """CPU over the time between the two readings, in percent of one core."""
        wall = self.wall - earlier.wall
        return _CpuClock(
            wall,
            100.0 * (self.coordinator - earlier.coordinator) / wall,
            100.0 * (self.clients - earlier.clients) / wall,
            100.0 * (self.machine - earlier.machine) / wall,
        )


def _memory_mb(pid: int, key: str) -> float:
    """A ``kB`` line of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024.0
    return math.nan


def _check_file_limit(needed: int, who: str) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise BenchError(
            f"{who} needs about {needed} open files (a socket per store) but the hard limit "
            f"is {hard}; raise it (ulimit -Hn, limits.conf) or run fewer stores per client."
        )


@dataclass
class _Coordinator:
    process: subprocess.Popen[bytes]
    log: Path
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid


def _log_tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _coordinator_command(home: CoordinatorHome, url: str) -> list[str]:
    """The real coordinator, as an operator starts it, on a port the system picks."""
    # The `loyalnet` command installed beside this interpreter (the coordinator imports
    # nothing of the command line, so it starts it as a user does).
    return [
        str(Path(sys.executable).parent / "loyalnet"),
        "coordinator",
        "serve",
        "--no-superlink",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--dir",
        str(home.folder),
        "--database",
        url,
    ]


def _start_coordinator(
    home: CoordinatorHome, url: str, work: Path, cleanup: contextlib.ExitStack
) -> _Coordinator:
    """``loyalnet coordinator serve`` on a free port of 127.0.0.1, once it listens."""
    log = work / "coordinator.log"
    command = _coordinator_command(home, url)
    environment = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=output, stderr=output, env=environment
        )
    cleanup.callback(_stop_coordinator, process)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Its own soft limit may be below what N sockets need; lift it from here, as the agents
    # lift theirs, since the coordinator's code is not this benchmark's to change.
    with contextlib.suppress(OSError, ValueError):
        resource.prlimit(process.pid, resource.RLIMIT_NOFILE, (hard, hard))
    give_up = time.monotonic() + COORDINATOR_START_SECONDS
    while time.monotonic() < give_up:
        found = _LISTENING.search(log.read_text(errors="replace"))
        if found:
            return _Coordinator(process, log, int(found.group(1)))
        if process.poll() is not None:
            raise BenchError(
                f"the coordinator exited with code {process.returncode} before it listened:\n"
                + _log_tail(log)
            )
        time.sleep(0.2)
    raise BenchError(
        f"the coordinator did not listen within {COORDINATOR_START_SECONDS:.0f} s:\n"
        + _log_tail(log)
    )


def _stop_coordinator(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (it flushes its heartbeats and stops), then SIGKILL if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(COORDINATOR_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _Children:
    """Child processes of this module (:func:`child_main`), each with a pipe to it."""

    def __init__(self, work: Path, role: str) -> None:
        self._work = work
        self._role = role
        self.processes: list[subprocess.Popen[bytes]] = []
        self.connections: list[Connection] = []
        # Children that said their last word: their pipe's end of file is no news.
        self.finished: set[int] = set()

    @classmethod
    def spawn(
        cls, jobs: Sequence[object], work: Path, role: str, cleanup: contextlib.ExitStack
    ) -> _Children:
        """Start one child per job (all first, then hand out the jobs: they can be large)."""
        children = cls(work, role)
        cleanup.callback(children.stop)
        for index in range(len(jobs)):
            ours, theirs = socket.socketpair()
            with theirs, (work / f"{role}-{index}.log").open("wb") as log:
                children.processes.append(
                    subprocess.Popen(
                        [sys.executable, "-c", _CHILD_COMMAND, str(theirs.fileno())],
                        pass_fds=(theirs.fileno(),),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        # A Ctrl-C in the terminal reaches only this process, which then
                        # stops its children in order.
                        start_new_session=True,
                    )
                )
            children.connections.append(Connection(ours.detach()))
        for connection, job in zip(children.connections, jobs, strict=True):
            connection.send(job)
        return children

    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def _died(self, index: int, doing: str) -> BenchError:
        process = self.processes[index]
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(2.0)
        return BenchError(
            f"{self._role} process {index} ended (exit code {process.returncode}) while "
            f"{doing}:\n{_log_tail(self._work / f'{self._role}-{index}.log')}"
        )

    def messages(self, deadline: float, doing: str) -> list[tuple[int, Any]]:
        """What unfinished children send within a second (by child index); a dead one raises."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"the {self._role} processes did not finish {doing} in time.")
        arrived = []
        waiting = [c for i, c in enumerate(self.connections) if i not in self.finished]
        for ready in wait(waiting, timeout=min(left, 1.0)):
            assert isinstance(ready, Connection)
            index = self.connections.index(ready)
            try:
                arrived.append((index, ready.recv()))
            except (EOFError, ConnectionResetError) as err:
                raise self._died(index, doing) from err
        return arrived

    def gather(
        self, want: str, deadline: float, report: Report, total: int, *, last: bool = False
    ) -> list[Any]:
        """The ``want`` message of every child, reporting ``connecting`` progress meanwhile.

        ``last``: it is the children's last word; they may exit once they have said it.
        """
        answers: dict[int, Any] = {}
        progress = dict.fromkeys(range(len(self.connections)), 0)
        while len(answers) < len(self.connections):
            for index, message in self.messages(deadline, f"reporting {want!r}"):
                if message[0] == "connecting":
                    progress[index] = message[1]
                    report("connecting channels", sum(progress.values()), total)
                elif message[0] == want:
                    answers[index] = message[1]
                    if last:
                        self.finished.add(index)
        return [answers[index] for index in range(len(self.connections))]

    def stop(self) -> None:
        """Close the pipes, give the children a moment to finish, kill the rest by pid."""
        # A closed pipe ends a child that waits for its next word at once.
        for connection in self.connections:
            connection.close()
        give_up = time.monotonic() + CHILD_EXIT_SECONDS
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.0, give_up - time.monotonic()))
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def _start_agents(
    settings: BenchSettings,
    identities: Sequence[StoreIdentity],
    address: str,
    ca_pem: bytes,
    work: Path,
    cleanup: contextlib.ExitStack,
) -> _Children:
    count = min(settings.clients, len(identities))
    plans = [
        AgentPlan(
            index=index,
            address=address,
            ca_pem=ca_pem,
            stores=tuple(identities[index::count]),
            interval_seconds=float(settings.interval_seconds),
            deadline_seconds=settings.deadline_seconds,
            connect_seconds=settings.connect_seconds,
            seed=settings.seed * MAX_CLIENTS + index,
        )
        for index in range(count)
    ]
    return _Children.spawn(plans, work, "agent", cleanup)


# --- the run ------------------------------------------------------------------------------


def _percentile_ms(ordered: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of sorted seconds, in ms (NaN for no samples)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(share * len(ordered)))
    return 1000.0 * ordered[rank - 1]


def _sleep_until(moment: float, report: Report, phase: str, start: float) -> None:
    while (left := moment - time.monotonic()) > 0:
        report(phase, time.monotonic() - start, moment - start)
        time.sleep(min(left, 0.5))
    report(phase, moment - start, moment - start)


def run_control_plane_bench(
    settings: BenchSettings, *, work_root: Path | None = None, report: Report = _quiet
) -> BenchResult:
    """Run the benchmark; everything it starts or makes is gone when it returns or raises.

    Args:
        work_root: where its temporary folder goes (default: the system's temp folder).
        report: told the progress of each phase, e.g. for a progress bar.

    Raises:
        BenchError: a setup step failed, the coordinator did not start, or the client
            processes did not connect or report in time.
    """
    settings.check()
    per_agent = math.ceil(settings.stores / min(settings.clients, settings.stores))
    _check_file_limit(settings.stores + FILE_HEADROOM, "the coordinator")
    _check_file_limit(per_agent + FILE_HEADROOM, "each client process")
    began = time.monotonic()
    with contextlib.ExitStack() as cleanup:
        work = Path(tempfile.mkdtemp(prefix="loyalnet-cp-bench-", dir=work_root))
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        url, kind = _database(settings, work, cleanup)
        report("coordinator folder", 0, None)
        home = create_coordinator_home(
            work / "coordinator", "bench", heartbeat_seconds=settings.interval_seconds
        )
        identities, register_ms = _enrol(home, url, settings.stores, work, report)
        report("starting the coordinator", 0, None)
        coordinator = _start_coordinator(home, url, work, cleanup)
        rss_before = _memory_mb(coordinator.pid, "VmRSS")
        setup_seconds = time.monotonic() - began

        connecting = time.monotonic()
        agents = _start_agents(
            settings,
            identities,
            f"127.0.0.1:{coordinator.port}",
            home.tls.ca_certificate.read_bytes(),
            work,
            cleanup,
        )
        failures = agents.gather(
            "ready", connecting + settings.connect_seconds + 60.0, report, settings.stores
        )
        connect_seconds = time.monotonic() - connecting

        start = time.monotonic() + GO_MARGIN_SECONDS
        window_start = start + settings.interval_seconds
        window_end = window_start + settings.seconds
        for connection in agents.connections:
            connection.send(("go", start, window_start, window_end))
        _sleep_until(window_start, report, "warm-up (one interval)", start)
        pids = agents.pids()
        before = _CpuClock.read(coordinator.pid, pids)
        _sleep_until(window_end, report, "measuring", window_start)
        cpu = _CpuClock.read(coordinator.pid, pids).percent_since(before)
        report("collecting", 0, None)
        tallies: list[AgentReport] = agents.gather(
            "done",
            time.monotonic() + settings.deadline_seconds + 30.0,
            report,
            settings.stores,
            last=True,
        )
        peak_rss = _memory_mb(coordinator.pid, "VmHWM")
        report("stopping", 0, None)
        processes = (coordinator.pid, *pids)
    # Everything is stopped and removed here; what follows only counts.
    latencies: list[float] = []
    late: list[float] = []
    errors: Counter[str] = Counter()
    for tally in tallies:
        latencies.extend(array("d", tally.latencies))
        late.extend(array("d", tally.late))
        errors.update(tally.errors)
    latencies.sort()
    late.sort()
    return BenchResult(
        stores=settings.stores,
        seconds=settings.seconds,
        interval_seconds=settings.interval_seconds,
        database=kind,
        heartbeats_per_second=round(len(latencies) / settings.seconds, 2),
        expected_heartbeats_per_second=round(settings.stores / settings.interval_seconds, 2),
        p50_ms=round(_percentile_ms(latencies, 0.50), 2),
        p99_ms=round(_percentile_ms(latencies, 0.99), 2),
        max_ms=round(_percentile_ms(latencies, 1.0), 2),
        errors=sum(errors.values()),
        coordinator_cpu_percent=round(cpu.coordinator, 1),
        coordinator_peak_rss_mb=round(peak_rss, 1),
        client_processes=len(pids),
        setup_seconds=round(setup_seconds, 1),
        error_codes=dict(errors),
        connect_failures=sum(failures),
        connect_seconds=round(connect_seconds, 1),
        register_ms_per_store=round(register_ms, 2),
        coordinator_rss_before_mb=round(rss_before, 1),
        client_cpu_percent=round(cpu.clients, 1),
        machine_cpu_percent=round(cpu.machine, 1),
        other_cpu_percent=round(max(0.0, cpu.machine - cpu.coordinator - cpu.clients), 1),
        machine_cores=os.cpu_count() or 1,
        client_late_p99_ms=round(_percentile_ms(late, 0.99), 2),
        processes=processes,
    )


# --- the command line ------------------------------------------------------------------------


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the coordinator, agents and database are cleaned up."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _progress_report(progress: Progress) -> Report:
    tasks: dict[str, TaskID] = {}

    def report(phase: str, done: float, total: float | None) -> None:
        if phase not in tasks:
            for earlier in tasks.values():
                progress.update(earlier, visible=False)
            tasks[phase] = progress.add_task(phase, total=total)
        progress.update(tasks[phase], completed=done, total=total)

    return report


def _table(result: BenchResult) -> Table:
    table = Table(title="control plane: heartbeats", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for name, value in result.as_json().items():
        table.add_row(name, str(value))
    return table


def control_plane_command(
    stores: Annotated[
        int, typer.Option(min=1, max=MAX_STORES, help="Simulated stores, one connection each.")
    ] = 1000,
    seconds: Annotated[
        float,
        typer.Option(min=1, max=3600, help="Measured seconds, after one interval of warm-up."),
    ] = 60.0,
    interval: Annotated[
        int, typer.Option(min=1, max=3600, help="Seconds between a store's heartbeats.")
    ] = 10,
    database: Annotated[
        str,
        typer.Option(
            help="sqlite (a temporary file), postgresql (a temporary database on the local "
            "server, dropped afterwards) or a URL used as it is (the benchmark's stores stay "
            "in it)."
        ),
    ] = "sqlite",
    clients: Annotated[
        int, typer.Option(min=1, max=MAX_CLIENTS, help="Client processes the stores run in.")
    ] = 2,
    postgres_server: Annotated[
        str,
        typer.Option(
            help="The server --database postgresql makes its temporary database on (a role "
            "with CREATEDB).",
            show_default=False,
        ),
    ] = DEFAULT_POSTGRES_SERVER,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only the result as JSON on stdout.")
    ] = False,
) -> None:
    """Heartbeats of N simulated stores against a real coordinator: rate, latency, CPU.

    Makes a throwaway chain (CA, N store certificates, registry), runs `loyalnet coordinator
    serve` and N stores in client processes on 127.0.0.1, and measures after one interval of
    warm-up. Loads every core of this machine; removes all it made.
    """
    settings = BenchSettings(
        stores=stores,
        seconds=seconds,
        interval_seconds=interval,
        database=database,
        clients=clients,
        postgres_server=postgres_server,
    )
    stderr = Console(stderr=True)
    with (
        _terminate_as_exit(),
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=stderr,
            transient=True,
        ) as progress,
    ):
        result = run_control_plane_bench(settings, report=_progress_report(progress))
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2))
        return
    Console().print(_table(result))
