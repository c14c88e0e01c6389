"""The store's trainer in ``loyalnet store serve``: a ``StoreService`` on a Unix socket.

The socket is ``trainer.sock`` in the store folder, created with mode 0600: only the store's
own user (the one whose SuperNode runs the ClientApp) can connect, and nothing off the machine
can. One round is trained at a time; a second waits for the first. A socket path longer than
the system allows (about 107 bytes) leaves the trainer off, with a warning: the ClientApp then
trains in its own process, as it does whenever ``store serve`` is not running.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent import futures

import grpc

from loyalnet.store.v1 import trainer_pb2, trainer_pb2_grpc
from store_node.config import StorePaths
from store_node.trainer.answer import StoreRoundError
from store_node.trainer.wire import (
    MESSAGE_SIZE_OPTIONS,
    answer_to_wire,
    from_wire,
    settings_from_json,
)

log = logging.getLogger("loyalnet.store.trainer")

MAX_SOCKET_PATH = 107
"""sockaddr_un's path limit on Linux, without the terminating NUL."""


class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    """``loyalnet.store.v1.Trainer`` for one store folder."""

    def __init__(self, paths: StorePaths, threads: int) -> None:
        self._paths = paths
        self._threads = threads
        self._one_round = threading.Lock()

    def TrainRound(
        self, request: trainer_pb2.TrainRoundRequest, context: grpc.ServicerContext
    ) -> trainer_pb2.TrainRoundReply:
        import torch

        from store_node.trainer.round import answer_round

        try:
            received = from_wire(request.arrays)
            settings = settings_from_json(request.settings_json)
            with self._one_round:
                # OpenMP's thread count is kept per thread: set it in this worker thread too,
                # or the same seed could give another backbone than in the ClientApp's process.
                torch.set_num_threads(self._threads)
                answer = answer_round(self._paths.root, received, settings)
        except StoreRoundError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except Exception as exc:  # the details stay in the store's log, as in the ClientApp
            log.exception("local training failed")
            context.abort(
                grpc.StatusCode.INTERNAL,
                f"local training failed on this store ({type(exc).__name__}); "
                "the details are in the store's log.",
            )
        if answer.arrays is not None:
            log.info("round trained: %d examples, %.1f s", answer.examples, answer.seconds)
        return answer_to_wire(answer)


class Trainer:
    """The trainer service of ``store serve`` (a ``StoreService``).

    Args:
        paths: the store folder.
        threads: torch CPU threads for training (None: torch's default, one per core).
    """

    name = "trainer"

    def __init__(self, paths: StorePaths, threads: int | None = None) -> None:
        self._paths = paths
        self._threads = threads
        self._server: grpc.Server | None = None

    def start(self) -> None:
        """Listen on the store's trainer socket (replacing a stale one)."""
        socket = self._paths.trainer_socket
        if len(os.fsencode(socket.resolve())) > MAX_SOCKET_PATH:
            log.warning(
                "the trainer socket path %s is too long for a Unix socket: rounds are trained "
                "in the SuperNode's own process instead (a store folder with a shorter path "
                "avoids this)",
                socket,
            )
            return
        # torch and the training code, loaded now so that the first round finds them warm.
        import torch

        from store_node.trainer import round as _round  # noqa: F401

        threads = self._threads if self._threads is not None else torch.get_num_threads()

        socket.unlink(missing_ok=True)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="trainer"),
            options=MESSAGE_SIZE_OPTIONS,
        )
        trainer_pb2_grpc.add_TrainerServicer_to_server(
            TrainerServicer(self._paths, threads), server
        )
        previous = os.umask(0o177)  # the socket is created 0600: the store's user only
        try:
            server.add_insecure_port(f"unix:{socket.resolve()}")
            server.start()
        finally:
            os.umask(previous)
        socket.chmod(0o600)
        self._server = server
        log.info("trainer listening on %s", socket)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop; a round in progress gets ``timeout`` s to finish."""
        if self._server is None:
            return True
        done = self._server.stop(grace=timeout)
        finished = done.wait(timeout + 1.0)
        self._server = None
        self._paths.trainer_socket.unlink(missing_ok=True)
        return finished

    def running(self) -> bool:
        return True
