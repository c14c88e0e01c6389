"""The ClientApp's side of the store's trainer: hand the round to ``store serve``; no torch."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import grpc
import numpy as np

from loyalnet.store.v1 import trainer_pb2, trainer_pb2_grpc
from store_node.trainer.answer import TRAINER_SOCKET_NAME, RoundAnswer, StoreRoundError
from store_node.trainer.wire import (
    MESSAGE_SIZE_OPTIONS,
    answer_from_wire,
    settings_to_json,
    to_wire,
)

log = logging.getLogger("loyalnet.store.trainer")


def answer_in_serve(
    store_dir: Path,
    received: Mapping[str, np.ndarray],
    settings: Mapping[str, object],
    timeout_seconds: float | None = None,
) -> RoundAnswer | None:
    """The round answered by the store's running ``store serve``; None when none runs.

    None also when the trainer cannot be reached (the socket is stale, ``store serve`` is
    stopping): the caller then answers in its own process, with the same code.

    Raises:
        StoreRoundError: the trainer refused the round's model or failed; its text is safe to
            send (details are in the store's log).
    """
    # Not StorePaths: store_node.config would load the gallery into every ClientApp process.
    socket = store_dir / TRAINER_SOCKET_NAME
    settings_json = settings_to_json(settings)
    if not socket.exists() or settings_json is None:
        return None
    request = trainer_pb2.TrainRoundRequest(arrays=to_wire(received), settings_json=settings_json)
    with grpc.insecure_channel(f"unix:{socket.resolve()}", options=MESSAGE_SIZE_OPTIONS) as channel:
        stub = trainer_pb2_grpc.TrainerStub(channel)
        try:
            reply = stub.TrainRound(request, timeout=timeout_seconds)
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            if code == grpc.StatusCode.UNAVAILABLE:
                log.info("the store's trainer is not answering; training in this process")
                return None
            details = err.details() if isinstance(err, grpc.Call) else str(err)
            raise StoreRoundError(details or "the store's trainer failed") from None
    return answer_from_wire(reply)
