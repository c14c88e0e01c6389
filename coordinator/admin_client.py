"""A typed client of the control plane's ``Admin`` service, for the CLI and the console.

It speaks as whoever the certificate names: ``coordinator init`` makes ``tls/admin.crt`` for
the first admin; ``loyalnet coordinator issue-certificate`` makes more, admins or viewers. A
refusal by the coordinator becomes an :class:`AdminError` with its status and message; an
unreachable coordinator one that says how to start it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import grpc

from coordinator.errors import CoordinatorError
from coordinator.home import CoordinatorHome
from loyalnet.chain.v1 import chain_pb2, chain_pb2_grpc
from loyalnet.chain_tls import ClientIdentity

DEFAULT_TIMEOUT_SECONDS = 15.0
_Request = TypeVar("_Request")
_Reply = TypeVar("_Reply")


class AdminError(CoordinatorError):
    """The coordinator refused a call, or could not be reached.

    Attributes:
        code: the gRPC status, e.g. ``PERMISSION_DENIED`` for a viewer's act.
    """

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.code = code


class AdminClient:
    """Calls to one coordinator's ``Admin`` service; close it (or use ``with``) when done."""

    def __init__(
        self, address: str, identity: ClientIdentity, timeout: float = DEFAULT_TIMEOUT_SECONDS
    ) -> None:
        self.address = address
        self._timeout = timeout
        self._channel = grpc.secure_channel(address, identity.credentials())
        self._stub = chain_pb2_grpc.AdminStub(self._channel)

    @classmethod
    def for_home(
        cls,
        home: CoordinatorHome,
        *,
        address: str | None = None,
        certificate: Path | None = None,
        key: Path | None = None,
    ) -> AdminClient:
        """A client of the coordinator in ``home`` (127.0.0.1 and its control port by default),
        speaking with ``certificate`` and ``key`` (default: the folder's ``tls/admin.*``)."""
        config = home.read_config()
        identity = ClientIdentity.from_files(
            home.tls.ca_certificate,
            certificate or home.tls.admin_certificate,
            key or home.tls.admin_key,
        )
        return cls(address or f"127.0.0.1:{config.control_port}", identity)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def whoami(self) -> chain_pb2.WhoAmIReply:
        return self._call(self._stub.WhoAmI, chain_pb2.WhoAmIRequest())

    def stores(self) -> list[chain_pb2.Store]:
        return list(self._call(self._stub.ListStores, chain_pb2.ListStoresRequest()).stores)

    def runs(self) -> list[chain_pb2.TrainingRun]:
        return list(self._call(self._stub.ListRuns, chain_pb2.ListRunsRequest()).runs)

    def models(self) -> chain_pb2.ListModelsReply:
        return self._call(self._stub.ListModels, chain_pb2.ListModelsRequest())

    def erasures(self) -> list[chain_pb2.Erasure]:
        reply = self._call(self._stub.ListErasures, chain_pb2.ListErasuresRequest())
        return list(reply.erasures)

    def erasure(self, request_id: str) -> chain_pb2.Erasure:
        return self._call(self._stub.GetErasure, chain_pb2.GetErasureRequest(request_id=request_id))

    def audit(self, limit: int = 200, action: str = "") -> list[chain_pb2.AuditRecord]:
        request = chain_pb2.ReadAuditRequest(limit=limit, action=action)
        return list(self._call(self._stub.ReadAudit, request).records)

    def erase(self, member_id: str) -> chain_pb2.Erasure:
        request = chain_pb2.RequestErasureRequest(member_id=member_id)
        return self._call(self._stub.RequestErasure, request)

    def promote(self, version: int) -> chain_pb2.Rollout:
        return self._call(self._stub.Promote, chain_pb2.PromoteRequest(version=version))

    def rollback(self) -> chain_pb2.Rollout:
        return self._call(self._stub.Rollback, chain_pb2.RollbackRequest())

    def train(
        self,
        rounds: int = 0,
        *,
        strategy: str = "",
        local_epochs: int = 0,
        learning_rate: float = 0.0,
        min_stores: int = 0,
        update_encoding: str = "",
        release_mix: float = 0.0,
    ) -> chain_pb2.TrainingRun:
        """Start a run; an empty or zero setting keeps the coordinator's default."""
        request = chain_pb2.StartTrainingRequest(
            rounds=rounds,
            strategy=strategy,
            local_epochs=local_epochs,
            learning_rate=learning_rate,
            min_stores=min_stores,
            update_encoding=update_encoding,
            release_mix=release_mix,
        )
        return self._call(self._stub.StartTraining, request)

    def events(self, after_event_id: int = 0) -> Iterator[chain_pb2.ChainEvent]:
        """Chain events as they happen; iterate until done, then :meth:`close`."""
        stream = self._stub.WatchEvents(chain_pb2.WatchEventsRequest(after_event_id=after_event_id))
        try:
            yield from stream
        except grpc.RpcError as err:
            raise self._error(err) from None

    def _call(
        self, method: grpc.UnaryUnaryMultiCallable[_Request, _Reply], request: _Request
    ) -> _Reply:
        try:
            return method(request, timeout=self._timeout)
        except grpc.RpcError as err:
            raise self._error(err) from None

    def _error(self, err: grpc.RpcError) -> AdminError:
        code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = err.details() if isinstance(err, grpc.Call) else str(err)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return AdminError(
                f"cannot reach the coordinator's control plane at {self.address} ({details}); "
                "is `loyalnet coordinator serve` running there?",
                code,
            )
        return AdminError(f"the coordinator refused: {details} ({code.name})", code)
