"""Packed arrays and round settings as the Trainer service carries them; no torch."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import numpy as np

from loyalnet.store.v1 import trainer_pb2
from store_node.trainer.answer import PackedArrays, RoundAnswer, StoreRoundError

MAX_MESSAGE_BYTES = 64 * 2**20
"""The packed backbone is 4.1 MB each way; gRPC's default limit is 4 MiB."""
MESSAGE_SIZE_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
"""The gRPC options of both ends of the trainer's socket."""


def to_wire(arrays: Mapping[str, np.ndarray]) -> list[trainer_pb2.PackedArray]:
    """``arrays`` as float32 little-endian messages, in their order."""
    return [
        trainer_pb2.PackedArray(
            name=name,
            shape=list(array.shape),
            float32_le=np.ascontiguousarray(array, dtype="<f4").tobytes(),
        )
        for name, array in arrays.items()
    ]


def from_wire(messages: Iterable[trainer_pb2.PackedArray]) -> PackedArrays:
    """The arrays back, in their order.

    Raises:
        StoreRoundError: an array's bytes are not its declared shape of float32, or a name
            comes twice.
    """
    arrays: PackedArrays = {}
    for message in messages:
        shape = tuple(int(size) for size in message.shape)
        if any(size < 0 for size in shape) or message.name in arrays:
            raise StoreRoundError(f"the trainer got a malformed array {message.name!r}")
        count = int(np.prod(shape, dtype=np.int64))
        if len(message.float32_le) != 4 * count:
            raise StoreRoundError(
                f"array {message.name!r} holds {len(message.float32_le)} bytes, not the "
                f"{4 * count} of its shape {shape}"
            )
        flat = np.frombuffer(message.float32_le, dtype="<f4")
        arrays[message.name] = flat.astype(np.float32).reshape(shape)
    return arrays


def settings_to_json(settings: Mapping[str, object]) -> str | None:
    """The round's config as JSON, or None when a value is no number, boolean or string
    (the store then answers in its own process, where the floor declines what it cannot read)."""
    if not all(isinstance(value, bool | int | float | str) for value in settings.values()):
        return None
    return json.dumps(dict(settings))


def settings_from_json(text: str) -> dict[str, object]:
    """The round's config back.

    Raises:
        StoreRoundError: it is not a JSON object.
    """
    try:
        settings = json.loads(text)
    except ValueError:
        settings = None
    if not isinstance(settings, dict):
        raise StoreRoundError("the trainer got round settings that are no JSON object")
    return settings


def answer_to_wire(answer: RoundAnswer) -> trainer_pb2.TrainRoundReply:
    """The reply message of ``answer``."""
    return trainer_pb2.TrainRoundReply(
        arrays=to_wire(answer.arrays) if answer.arrays is not None else [],
        declined=answer.declined,
        refused=answer.refused,
        examples=answer.examples,
        members=answer.members,
        loss_first_epoch=answer.loss_first_epoch,
        loss_last_epoch=answer.loss_last_epoch,
        seconds=answer.seconds,
        purged=answer.purged,
    )


def answer_from_wire(reply: trainer_pb2.TrainRoundReply) -> RoundAnswer:
    """``answer_to_wire`` undone."""
    if reply.declined or not reply.arrays:
        return RoundAnswer.declining(
            reply.declined or "declined", refused=reply.refused, purged=int(reply.purged)
        )
    return RoundAnswer(
        arrays=from_wire(reply.arrays),
        examples=int(reply.examples),
        members=int(reply.members),
        loss_first_epoch=float(reply.loss_first_epoch),
        loss_last_epoch=float(reply.loss_last_epoch),
        seconds=float(reply.seconds),
        purged=int(reply.purged),
    )
