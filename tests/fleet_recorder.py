"""A recording proxy for Flower's Fleet API: every byte a SuperNode sends, as it went.

In Flower 1.42 a SuperNode talks to the SuperLink in protobuf over plain HTTP/1.1 POSTs
(``/v1/fleet/...``; insecure here, TLS comes separately). Pointing a SuperNode's
``--superlink`` at this proxy records each request body it sends and each response body it
gets, and forwards them unchanged. That is the store's traffic itself, heartbeats and object
uploads included, not a re-serialisation of what a handler returned.

:func:`sent_messages` rebuilds the messages the SuperNode pushed from the recorded objects,
with Flower's own decoder (:func:`received_messages` those it pulled). Objects are named by the
sha256 of their content, and the SuperLink asks only for those it lacks, so the rebuild also
draws on the objects the node pulled.
"""

from __future__ import annotations

import http.client
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from flwr.app import Message
from flwr.proto.fleet_pb2 import PullMessagesResponse, PushMessagesRequest
from flwr.proto.message_pb2 import PullObjectResponse, PushObjectRequest
from flwr.supercore.inflatable.inflatable_object import get_object_id
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

# Headers that describe one hop of the connection, not the request; never forwarded.
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


@dataclass(frozen=True)
class Exchange:
    """One request the SuperNode sent and the SuperLink's answer."""

    path: str
    request_headers: bytes
    request: bytes
    status: int
    response: bytes
    at: float  # time.time() when the request arrived


class FleetRecorder:
    """A thread serving 127.0.0.1:<free port>, forwarding to ``upstream`` and recording."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        """Where the SuperNode should connect: ``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def recorded(self) -> list[Exchange]:
        """A snapshot of the exchanges so far."""
        with self._lock:
            return list(self.exchanges)

    def record(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)


class _QuietServer(ThreadingHTTPServer):
    """Says nothing when a SuperNode drops its connection (tests kill and stop them)."""

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(recorder: FleetRecorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects

        upstream: http.client.HTTPConnection | None = None

        def do_POST(self) -> None:
            started = time.time()
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {
                key: value
                for key, value in self.headers.items()
                if key.lower() not in _HOP_HEADERS and key.lower() != "accept-encoding"
            }  # identity encoding, so that recorded responses are plain protobuf
            if self.upstream is None:
                # One upstream connection per downstream one, kept alive like the node's.
                self.upstream = http.client.HTTPConnection(recorder.upstream, timeout=120)
            self.upstream.request("POST", self.path, body=body, headers=headers)
            answer = self.upstream.getresponse()
            payload = answer.read()
            recorder.record(
                Exchange(self.path, bytes(self.headers), body, answer.status, payload, started)
            )
            try:
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in _HOP_HEADERS:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the SuperNode is gone (a test killed it)

        def finish(self) -> None:
            super().finish()
            if self.upstream is not None:
                self.upstream.close()

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the exchanges are the record

    return Handler


def sent_messages(
    exchanges: list[Exchange], elsewhere: list[Exchange] | None = None
) -> list[Message]:
    """The messages the SuperNode pushed in ``exchanges``, rebuilt with their content.

    Args:
        elsewhere: other nodes' exchanges, for objects this node did not push because the
            SuperLink already held them (two stores' identical all-zero float16 changes).
    """
    roots = [
        tree.object_id
        for exchange in exchanges
        if exchange.path.endswith("/push-messages")
        for tree in PushMessagesRequest.FromString(exchange.request).message_object_trees
    ]
    return _inflated(roots, [*(elsewhere or []), *exchanges])


def received_messages(exchanges: list[Exchange]) -> list[Message]:
    """The messages the SuperNode pulled in ``exchanges``, rebuilt with their content."""
    roots = [
        tree.object_id
        for exchange in exchanges
        if exchange.path.endswith("/pull-messages") and exchange.status == 200
        for tree in PullMessagesResponse.FromString(exchange.response).message_object_trees
    ]
    return _inflated(roots, exchanges)


def _inflated(roots: list[str], exchanges: list[Exchange]) -> list[Message]:
    """Messages rebuilt from the objects pushed and pulled (the node may not re-push one)."""
    contents: dict[str, bytes] = {}
    for exchange in exchanges:
        if exchange.path.endswith("/push-object"):
            pushed = PushObjectRequest.FromString(exchange.request)
            contents[pushed.object_id] = pushed.object_content
        elif exchange.path.endswith("/pull-object") and exchange.status == 200:
            pulled = PullObjectResponse.FromString(exchange.response)
            if pulled.object_found and pulled.object_available:
                contents[get_object_id(pulled.object_content)] = pulled.object_content
    messages = []
    for root in roots:
        message = inflate_object_from_contents(root, contents, keep_object_contents=True)
        assert isinstance(message, Message)
        messages.append(message)
    return messages
