"""The store's side of the chain's control plane: heartbeats, commands, receipts.

:class:`SyncAgent` runs one *cycle* at a time (:meth:`SyncAgent.run_once`):

1. deliver the receipts the outbox still holds (written before, not yet acknowledged);
2. calibrate the threshold of an adopted model, if that is still due;
3. ``Heartbeat`` with the store's numbers (``store_node.sync.health``);
4. when the reply says commands wait: ``PullCommands``; carry out each one (or, when the outbox
   shows it done already, take its stored receipt), write the signed receipt to the outbox,
   then ``Acknowledge`` it; after any command, one more heartbeat with the new numbers;
5. wait the reply's ``heartbeat_interval_seconds`` (10 s when the coordinator names none,
   held to [1, 300] s).

:meth:`SyncAgent.start` runs cycles in a background thread until :meth:`SyncAgent.stop`, so
that other services (the cameras, issue 8) can run beside it in the same process. A failing
cycle never ends the thread: it is retried (tenacity) with exponential back-off and jitter up to
``backoff_max`` seconds while the coordinator is unreachable, and every ``refused_retry``
seconds while it refuses the store (``PERMISSION_DENIED``, ``UNAUTHENTICATED``: e.g. a revoked
store). The log gets one line per change of state (online, unreachable, refused, failing, back
online), with the server's message when it refused. Every call has a deadline
(``call_timeout``; ``download_timeout`` for a model download).

No log line names a member: an erasure is logged by its command id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import grpc
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception_type
from tenacity.wait import wait_random_exponential

from loyalnet.chain.v1 import chain_pb2, chain_pb2_grpc
from loyalnet.chain_tls import load_private_key
from loyalnet.errors import LoyalnetError
from loyalnet.receipts import sign_receipt
from store_node.config import StorePaths
from store_node.node_identity import NodeIdentity
from store_node.sync.commands import CommandNotDone, CommandRunner, command_kind
from store_node.sync.connection import ControlPlane
from store_node.sync.health import (
    COUNTS_MAX_AGE_SECONDS,
    GALLERY_CHECK_SECONDS,
    HealthReporter,
    VisitSource,
)
from store_node.sync.outbox import Outbox, StoredReceipt
from store_node.threshold import DEFAULT_CALIBRATION_PEOPLE

log = logging.getLogger("loyalnet.store.sync")

MAX_COMMAND_ID_CHARS = 200
_UNREACHABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
_REFUSED = frozenset({grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED})
# The coordinator turned down one receipt, not the store: the receipt stays in the outbox and
# the cycle goes on with the others.
_RECEIPT_REFUSED = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)


class ConnectionState(StrEnum):
    """How the agent stands with the control plane; each change is logged once."""

    STARTING = "starting"
    ONLINE = "online"
    UNREACHABLE = "unreachable"
    """No answer (network, TLS handshake, deadline): back-off with jitter."""
    REFUSED = "refused"
    """The coordinator answered PERMISSION_DENIED or UNAUTHENTICATED: retried slowly."""
    FAILING = "failing"
    """Any other error, the coordinator's or the store's own: back-off with jitter."""


@dataclass(frozen=True)
class AgentSettings:
    """How the agent paces itself. Seconds throughout.

    Attributes:
        call_timeout: deadline of each call but model downloads.
        download_timeout: deadline of one model download (about 4 MiB).
        default_interval: between cycles when the coordinator names no interval.
        min_interval, max_interval: the coordinator's interval is held to this range.
        backoff_initial, backoff_max: the exponential back-off (with jitter) while failing.
        refused_retry: between tries while the coordinator refuses the store.
        calibration_retry: between tries of a calibration that failed.
        calibration_people: strangers a calibration embeds (``loyalnet store calibrate
            --limit``); about 40 s for the default 1500 on two CPU cores.
        gallery_check_every: how long a ``Gallery.check`` result is reused.
        counts_max_age: how long member counts are reused between commands.
        threads: CPU threads for the face models (None: torch's default).
        home: the shared data folder (None finds it).
    """

    call_timeout: float = 10.0
    download_timeout: float = 600.0
    default_interval: float = 10.0
    min_interval: float = 1.0
    max_interval: float = 300.0
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    refused_retry: float = 300.0
    calibration_retry: float = 600.0
    calibration_people: int = DEFAULT_CALIBRATION_PEOPLE
    gallery_check_every: float = GALLERY_CHECK_SECONDS
    counts_max_age: float = COUNTS_MAX_AGE_SECONDS
    threads: int | None = None
    home: Path | None = None


@dataclass(frozen=True)
class CycleReport:
    """What one cycle did.

    Attributes:
        pending_commands: commands waiting at the coordinator, by its heartbeat reply.
        commands_done: commands carried out (or refused) this cycle, receipts written.
        commands_waiting: commands not done yet (a busy gallery...), tried next cycle.
        receipts_delivered: receipts the coordinator acknowledged this cycle.
        interval_seconds: until the next cycle.
    """

    pending_commands: int
    commands_done: int
    commands_waiting: int
    receipts_delivered: int
    interval_seconds: float


class _Stopped(Exception):
    """The agent was asked to stop between two steps of a cycle."""


@dataclass(frozen=True)
class _Handled:
    """One command's turn in a cycle: ``done``, ``resent``, ``waiting`` or ``skipped``, and
    whether its receipt was acknowledged."""

    result: str
    delivered: bool


class SyncAgent:
    """Keeps one store in step with its chain's control plane (see the module docstring).

    Also a service of ``loyalnet store serve`` (``store_node.serve.StoreService``): ``start``,
    ``stop``, ``running``.
    """

    name = "control-plane sync"

    def __init__(
        self,
        paths: StorePaths,
        control_plane: ControlPlane,
        settings: AgentSettings | None = None,
        *,
        visits: VisitSource | None = None,
    ) -> None:
        """Open the store's outbox and prepare the channel (which connects on first use).

        Args:
            visits: the cameras' visit counts for the heartbeat; None without cameras.

        Raises:
            OutboxError: another process serves this store, or ``sync.db`` is unusable.
            LoyalnetError: the node key cannot be read.
        """
        self._paths = paths
        self._plane = control_plane
        self._settings = settings if settings is not None else AgentSettings()
        self._key = load_private_key(NodeIdentity(paths.root).private_key)
        # Taken first: the runner clears left-over downloads, which must not be another
        # serve's download in progress.
        self._outbox = Outbox.open(paths.root)
        try:
            self._channel = control_plane.channel()
            self._runner = CommandRunner(
                paths,
                control_plane.store_id,
                self._fetch_model,
                calibration_people=self._settings.calibration_people,
                threads=self._settings.threads,
                home=self._settings.home,
            )
        except BaseException:
            self._outbox.close()
            raise
        self._stub = chain_pb2_grpc.StoreSyncStub(self._channel)
        self._health = HealthReporter(
            paths,
            self._outbox,
            visits=visits,
            check_every=self._settings.gallery_check_every,
            counts_max_age=self._settings.counts_max_age,
        )
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = ConnectionState.STARTING
        self._problem = ""
        self._failures = 0
        self._last_calibration_try: float | None = None
        self._warned_receipts: set[str] = set()
        # "Full jitter": a random wait up to the exponential bound, so that a chain's stores
        # do not all come back at the same instant after a coordinator restart.
        self._backoff = wait_random_exponential(
            multiplier=self._settings.backoff_initial, max=self._settings.backoff_max
        )

    @property
    def state(self) -> ConnectionState:
        """How the agent stands with the control plane now."""
        return self._state

    @property
    def address(self) -> str:
        """The control plane's ``host:port``."""
        return self._plane.address

    @property
    def outbox(self) -> Outbox:
        """The store's outbox (for status displays; the agent is its only writer)."""
        return self._outbox

    # -- the service -----------------------------------------------------------------------

    def start(self) -> None:
        """Run cycles in a background thread until :meth:`stop`."""
        if self._thread is not None:
            raise LoyalnetError("the control-plane sync agent runs already.")
        self._thread = threading.Thread(
            target=self._run, name=f"loyalnet-sync-{self._plane.store_id}", daemon=True
        )
        self._thread.start()

    def running(self) -> bool:
        """Whether the background thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the agent: wake its wait, cancel its call in flight, close the outbox.

        A command being carried out (an adoption re-templating members) is not interrupted;
        the agent is waited for up to ``timeout`` seconds. Either way the outbox stays
        consistent: a receipt is written in one transaction, after the command's own.

        Returns:
            True when the agent stopped within ``timeout``.
        """
        self._stopping.set()
        self._channel.close()  # cancels a call in flight: the thread sees CANCELLED and ends
        stopped = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            stopped = not self._thread.is_alive()
        if stopped:
            self._outbox.close()
        else:
            log.warning(
                "control-plane sync still busy after %.0f s (carrying out a command); "
                "leaving it to finish",
                timeout,
            )
        return stopped

    def close(self) -> None:
        """Release the channel and the outbox (as :meth:`stop`, for agents never started)."""
        self.stop()

    # -- one cycle ---------------------------------------------------------------------------

    def run_once(self) -> CycleReport:
        """One cycle (see the module docstring), in the caller's thread.

        Raises:
            grpc.RpcError: a call failed (the coordinator is unreachable or refused).
            LoyalnetError: the store's own side failed (e.g. the outbox cannot be written).
        """
        self._check_stopping()
        delivered = sum(self._deliver(receipt) for receipt in self._outbox.undelivered())
        self._calibrate_if_due()
        reply = self._heartbeat()
        done = waiting = 0
        if reply.pending_commands > 0:
            self._check_stopping()
            pulled = self._stub.PullCommands(
                chain_pb2.PullCommandsRequest(), timeout=self._settings.call_timeout
            )
            for command in pulled.commands:
                self._check_stopping()
                handled = self._handle(command)
                done += handled.result == "done"
                waiting += handled.result == "waiting"
                delivered += handled.delivered
            if done:
                self._health.refresh()
                self._heartbeat()
        settings = self._settings
        interval = float(reply.heartbeat_interval_seconds or settings.default_interval)
        interval = min(max(interval, settings.min_interval), settings.max_interval)
        return CycleReport(reply.pending_commands, done, waiting, delivered, interval)

    def _heartbeat(self) -> chain_pb2.HeartbeatReply:
        self._check_stopping()
        request = chain_pb2.HeartbeatRequest(health=self._health.health())
        reply: chain_pb2.HeartbeatReply = self._stub.Heartbeat(
            request, timeout=self._settings.call_timeout
        )
        return reply

    def _handle(self, command: chain_pb2.Command) -> _Handled:
        """Carry out (or answer again) one command, write its receipt, deliver it."""
        command_id = command.command_id
        if not command_id or len(command_id) > MAX_COMMAND_ID_CHARS or not command_id.isprintable():
            log.warning(
                "the coordinator sent a command with an unusable id (%d characters); skipped",
                len(command_id),
            )
            return _Handled("skipped", delivered=False)
        record = self._outbox.begin_attempt(command_id, command_kind(command))
        if record.state == "delivered":
            # Its receipt reached the coordinator, which keeps it; the store dropped its copy
            # (it named the member) and neither redoes the command nor answers it again.
            log.info("command %s was answered and acknowledged before; ignored", command_id)
            return _Handled("skipped", delivered=False)
        calibration_due = None
        if record.receipt is None:
            try:
                outcome = self._runner.carry_out(command, record.attempts)
            except CommandNotDone as err:
                log.warning("%s; trying again next cycle", err)
                return _Handled("waiting", delivered=False)
            except grpc.RpcError:
                raise  # the connection broke: the whole cycle is retried with back-off
            except Exception:
                # A fault in this loyalnet must not hold up the commands behind it (an
                # erasure after a model that trips a bug). Erasures never get here: their
                # errors, which may name the member, become CommandNotDone.
                log.exception("command %s failed unexpectedly; trying again next cycle", command_id)
                return _Handled("waiting", delivered=False)
            body, signature = sign_receipt(outcome.fields, self._key)
            self._outbox.complete(
                command_id,
                body,
                signature,
                model_version=outcome.model_version,
                calibration_due=outcome.calibration_due,
            )
            log.info("%s", outcome.summary)
            receipt = StoredReceipt(command_id, body, signature)
            result = "done"
            calibration_due = outcome.calibration_due
        else:
            if command_id not in self._warned_receipts:  # said once already, otherwise
                log.info("command %s was carried out before; sending its receipt again", command_id)
            receipt = record.receipt
            result = "resent"
        delivered = self._deliver(receipt)
        if calibration_due is not None:
            self._calibrate_if_due(now=True)
        return _Handled(result, delivered)

    def _deliver(self, receipt: StoredReceipt) -> bool:
        """Acknowledge one stored receipt; True when the coordinator took it.

        Raises:
            grpc.RpcError: the coordinator is unreachable or refuses the store.
        """
        self._check_stopping()
        request = chain_pb2.AcknowledgeRequest(
            command_id=receipt.command_id,
            receipt=chain_pb2.Receipt(body=receipt.body, signature=receipt.signature),
        )
        try:
            reply = self._stub.Acknowledge(request, timeout=self._settings.call_timeout)
        except grpc.RpcError as err:
            code, details = _status(err)
            if code not in _RECEIPT_REFUSED:
                raise
            if receipt.command_id not in self._warned_receipts:
                self._warned_receipts.add(receipt.command_id)
                log.warning(
                    "the coordinator did not take the receipt of command %s (%s: %s); it stays "
                    "in the outbox and is sent again every cycle",
                    receipt.command_id,
                    code.name if code else "?",
                    details,
                )
            return False
        self._outbox.mark_delivered(receipt.command_id)
        self._warned_receipts.discard(receipt.command_id)
        if not reply.accepted:
            log.info(
                "the coordinator held a receipt for command %s already; its first one stands",
                receipt.command_id,
            )
        return True

    def _calibrate_if_due(self, *, now: bool = False) -> None:
        """Calibrate an adopted model's threshold, at most every ``calibration_retry`` s."""
        due = self._outbox.calibration_due()
        if due is None:
            return
        clock = time.monotonic()
        last = self._last_calibration_try
        if not now and last is not None and clock - last < self._settings.calibration_retry:
            return
        self._last_calibration_try = clock
        self._check_stopping()
        log.info("calibrating the threshold of %s", due)
        try:
            calibrated = self._runner.calibrate(due)
        except LoyalnetError as err:
            log.warning(
                "the threshold of %s is not calibrated yet: %s; trying again in %.0f s (or run "
                "`loyalnet store calibrate`)",
                due,
                err,
                self._settings.calibration_retry,
            )
            return
        self._outbox.calibration_done(due)
        if calibrated:
            log.info("threshold of %s calibrated", due)

    def _fetch_model(self, version: int) -> Iterable[chain_pb2.ModelChunk]:
        """Stream model ``version`` from the coordinator (one deadline for the whole file)."""
        self._check_stopping()
        chunks: Iterable[chain_pb2.ModelChunk] = self._stub.FetchModel(
            chain_pb2.FetchModelRequest(version=version), timeout=self._settings.download_timeout
        )
        return chunks

    def _check_stopping(self) -> None:
        if self._stopping.is_set():
            raise _Stopped("the agent is stopping")

    # -- the background loop ---------------------------------------------------------------

    def _run(self) -> None:
        retrying = Retrying(
            retry=retry_if_exception_type(Exception),
            wait=self._wait,
            stop=lambda _: self._stopping.is_set(),
            sleep=self._sleep,
            before_sleep=self._on_failure,
            reraise=False,
        )
        log.info(
            "control-plane sync of store %s with %s started", self._plane.store_id, self.address
        )
        while not self._stopping.is_set():
            try:
                report = retrying(self.run_once)
            except RetryError:
                break
            self._on_success()
            self._stopping.wait(report.interval_seconds)
        log.info("control-plane sync stopped")

    def _sleep(self, seconds: float) -> None:
        """Tenacity's back-off sleep, cut short by :meth:`stop`."""
        self._stopping.wait(seconds)

    def _wait(self, retry_state: RetryCallState) -> float:
        """Seconds before the next try: slow while refused, else exponential with jitter."""
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, grpc.RpcError) and _status(error)[0] in _REFUSED:
            return self._settings.refused_retry
        return float(self._backoff(retry_state))

    def _on_failure(self, retry_state: RetryCallState) -> None:
        """Log a failed cycle when the state (or a refusal's message) changed."""
        self._failures += 1
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if error is None or isinstance(error, _Stopped):
            return
        wait = retry_state.upcoming_sleep
        if isinstance(error, grpc.RpcError):
            code, details = _status(error)
            name = code.name if code else "UNKNOWN"
            if code in _UNREACHABLE:
                state, problem = ConnectionState.UNREACHABLE, ""
                message = (
                    f"control plane at {self.address} unreachable ({name}: {details}); "
                    f"retrying with back-off (at most {self._settings.backoff_max:.0f} s apart)"
                )
            elif code in _REFUSED:
                state, problem = ConnectionState.REFUSED, f"{name}: {details}"
                message = (
                    f"control plane at {self.address} refused store {self._plane.store_id} "
                    f"({name}: {details}); retrying every {wait:.0f} s"
                )
            else:
                state, problem = ConnectionState.FAILING, f"{name}: {details}"
                message = (
                    f"control plane at {self.address} failed ({name}: {details}); retrying "
                    f"in {wait:.1f} s"
                )
            self._change(state, problem, logging.WARNING, message)
            return
        if isinstance(error, LoyalnetError):
            self._change(
                ConnectionState.FAILING,
                str(error),
                logging.ERROR,
                f"control-plane sync failed on this store's side: {error}; retrying in "
                f"{wait:.1f} s",
            )
            return
        if self._change(
            ConnectionState.FAILING,
            f"{type(error).__name__}: {error}",
            logging.ERROR,
            f"control-plane sync failed unexpectedly ({type(error).__name__}); retrying in "
            f"{wait:.1f} s",
        ):
            log.error("the unexpected error", exc_info=error)

    def _on_success(self) -> None:
        if self._state is ConnectionState.STARTING:
            self._change(
                ConnectionState.ONLINE,
                "",
                logging.INFO,
                f"control plane at {self.address} online (store {self._plane.store_id})",
            )
        elif self._state is not ConnectionState.ONLINE:
            self._change(
                ConnectionState.ONLINE,
                "",
                logging.INFO,
                f"control plane at {self.address} back online after {self._failures} failed "
                "cycle(s)",
            )
        self._failures = 0

    def _change(self, state: ConnectionState, problem: str, level: int, message: str) -> bool:
        """Enter ``state``; log ``message`` if the state or its problem is new."""
        if state is self._state and problem == self._problem:
            return False
        self._state, self._problem = state, problem
        log.log(level, "%s", message)
        return True


def rpc_problem(error: grpc.RpcError) -> str:
    """``CODE: the server's message`` of a failed call, for logs and error messages."""
    code, details = _status(error)
    return f"{code.name if code else 'UNKNOWN'}: {details}"


def _status(error: grpc.RpcError) -> tuple[grpc.StatusCode | None, str]:
    """The status code and the server's message of a failed call (cut to one short line)."""
    code = getattr(error, "code", None)
    details = getattr(error, "details", None)
    status = code() if callable(code) else None
    text = details() if callable(details) else None
    message = " ".join(str(text or "").split())
    return (
        status if isinstance(status, grpc.StatusCode) else None,
        message if len(message) <= 300 else message[:297] + "...",
    )
