"""The store's Flower ClientApp: one round of local training on its consenting members.

A SuperNode runs one per store, started with ``--node-config 'store-dir="/path/to/store"'``.
Each training message from the coordinator carries the global backbone (``"arrays"``, an
ArrayRecord of the three flat arrays of ``loyalnet.packed_backbone``, unpacked here with the
store's own architecture's names and shapes) and the round's settings (``"config"``, a
ConfigRecord holding the :class:`TrainingConfig` fields in kebab case, plus FedProx's
``proximal-mu``). The reply holds:

- ``"arrays"``: the trained backbone packed the same way, exactly ``backbone_state``'s tensors,
  nothing per member (the CosFace class rows stay sealed in the store's gallery);
- ``"metrics"``: numbers about the round as a whole, see :func:`reply_metrics`. Never a member
  id, name or per-member value.

A store declines a round, before any training, when the round asks for anything outside the
store's own limits (``store.toml``'s ``[training]`` table, its privacy floor: fewest members,
most epochs, learning-rate range, frozen BatchNorm, DP clipping; see
``store_node.training.floor``, which also declines unknown round keys), and, after reading its
training data, when it has fewer consenting members than the round's ``min-members`` or its
own floor. A declining reply is exactly::

    RecordDict({"arrays": ArrayRecord(), "metrics": MetricRecord({"declined": 1})})

no model, and no count at all: no ``num-examples``, members, losses or seconds, since even a
member count tells the chain something about a store that did not agree to train. The
coordinator's strategy (``coordinator.strategy``) leaves declining replies out before
averaging, so they count neither in the average nor in FedAvg's check that all replies have
the same keys, and a round in which every store declines keeps the model as it was. (Echoing
the received model instead would also get weight 0 from plain FedAvg, but Flower 1.42 uploads
it again in full: measured, 4.7 MB more in ~490 more HTTP requests, for nothing.) Why it
declined is logged here, in the store's log (Flower's ``log``), not sent.

In a differentially private run the coordinator's round config also holds ``clipping_norm``
(see ``coordinator.store_privacy``), and the trained backbone is clipped before it is sent:
the update (trained minus received) is scaled to L2 norm at most that, by Flower's
``fixedclipping_mod`` (:func:`clip_when_asked`). Without the key, or when the store declines,
the reply is left as it is.

When the round's config asks for ``update-encoding = "float16-delta"``, the trained (and, in a
private run, clipped) backbone goes as its float16 change from the received one, half the
bytes (``loyalnet.update_encoding``, :func:`encode_when_asked`); ``arrays-bytes`` counts what
is sent.

Where the round is trained: Flower starts this ClientApp as a fresh process for every message,
so it imports neither torch nor the gallery. When the store's ``loyalnet store serve`` runs, it
hands the round to it over the store's trainer socket (``store_node.trainer``), where they are
loaded already; otherwise it trains here, with the same code (``store_node.trainer.round``).
Either way the store's own limits decide.

A failure is logged here in full and leaves the store only as its exception class: Flower
would otherwise send the exception's text to the coordinator, and a gallery error may name a
member.
"""

from __future__ import annotations

from logging import ERROR, INFO, WARNING
from pathlib import Path

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import log
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from loyalnet.update_encoding import (
    FLOAT16_DELTA,
    UPDATE_ENCODING_KEY,
    encode_float16_delta,
)
from store_node.trainer.answer import RoundAnswer, StoreRoundError
from store_node.trainer.client import answer_in_serve

STORE_DIR_KEY = "store-dir"
"""Node config key: the store folder (``gallery.db``, ``store.key``, ``store.toml``)."""
THREADS_KEY = "threads"
"""Optional node config key: torch CPU threads for training on this machine."""
WEIGHT_KEY = "num-examples"
"""The metric FedAvg and FedProx weight replies by (their ``weighted_by_key`` default)."""
DECLINED_KEY = "declined"
"""The metric that says a store declined (1) or trained (0)."""

app = ClientApp()


def encode_when_asked(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Send the trained backbone as its float16 change when the round asks for it.

    Outermost of the mods, so that in a private run the clipped update is what is encoded. A
    declining or failed reply goes as it is.
    """
    reply = call_next(msg, context)
    config = msg.content.config_records.get("config")
    if config is None or config.get(UPDATE_ENCODING_KEY) != FLOAT16_DELTA or reply.has_error():
        return reply
    if _declined(reply):
        return reply
    encoded = encode_float16_delta(
        reply.content.array_records["arrays"], msg.content.array_records["arrays"]
    )
    reply.content["arrays"] = encoded
    metrics = reply.content.metric_records["metrics"]
    metrics["arrays-bytes"] = encoded.count_bytes()
    return reply


def clip_when_asked(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``fixedclipping_mod`` when the round asks for clipping and the store trained.

    ``fixedclipping_mod`` alone answers every round without ``clipping_norm`` in its config
    (every run without DP) with an error, and a declining store's empty reply with an error too
    (its arrays' keys differ from the received ones). Here the first runs the handler unclipped
    and the second is sent as the handler made it: nothing in it to clip.
    """
    config = msg.content.config_records.get("config")
    if config is None or KEY_CLIPPING_NORM not in config:
        return call_next(msg, context)
    replies: list[Message] = []

    def train_and_keep(message: Message, ctxt: Context) -> Message:
        replies.append(call_next(message, ctxt))
        return replies[-1]

    clipped = fixedclipping_mod(msg, context, train_and_keep)
    if replies and not replies[0].has_error() and _declined(replies[0]):
        return replies[0]
    if clipped.has_error() and clipped.metadata.reply_to_message_id != msg.metadata.message_id:
        # Flower 1.42's mod addresses an error it finds in the reply to that reply, which the
        # SuperNode cannot deliver: the coordinator would wait out the round's timeout.
        return Message(clipped.error, reply_to=msg)
    return clipped


@app.train(mods=[encode_when_asked, clip_when_asked])
def train(msg: Message, context: Context) -> Message:
    """Train the received backbone on this store's consenting members and reply with it."""
    try:
        return _train(msg, context)
    except StoreRoundError:
        raise
    except Exception as exc:  # the full story stays here; see the module docstring
        log(ERROR, "local training failed", exc_info=exc)
        raise StoreRoundError(
            f"local training failed on this store ({type(exc).__name__}); "
            "the details are in the store's log."
        ) from None


def _train(msg: Message, context: Context) -> Message:
    store_dir = _store_dir(context)
    received = msg.content.array_records["arrays"]
    packed = {name: array.numpy() for name, array in received.items()}
    settings: dict[str, object] = dict(msg.content.config_records.get("config", ConfigRecord()))
    answer = answer_in_serve(store_dir, packed, settings)
    if answer is None:  # no `store serve` running: the same answer, computed here
        _set_threads(context)
        from store_node.trainer.round import answer_round

        answer = answer_round(store_dir, packed, settings)
    if answer.purged:  # a count for this store's log; the coordinator is not told
        log(INFO, "purged the biometrics of %d member(s) whose consent lapsed", answer.purged)
    if answer.arrays is None:
        log(
            WARNING if answer.refused else INFO,
            "this store declines the round: %s",
            answer.declined,
        )
        return declining_reply(msg)
    sent = _packed_record(answer, list(received.keys()))
    log(INFO, "round done: %d examples, %.1f s", answer.examples, answer.seconds)
    content = RecordDict({"arrays": sent, "metrics": reply_metrics(answer, sent)})
    return Message(content, reply_to=msg)


def declining_reply(msg: Message) -> Message:
    """The reply of a store that declines ``msg``: no arrays, only ``declined`` 1.

    The coordinator's side of this contract is ``coordinator.strategy``; see the module
    docstring for why nothing else is sent.
    """
    content = RecordDict({"arrays": ArrayRecord(), "metrics": declined_metrics()})
    return Message(content, reply_to=msg)


def declined_metrics() -> MetricRecord:
    """A declining reply's metrics: exactly ``{"declined": 1}``."""
    return MetricRecord({DECLINED_KEY: 1})


def reply_metrics(answer: RoundAnswer, sent: ArrayRecord) -> MetricRecord:
    """The round's numbers as sent: store-level totals and means only, nothing per member.

    For a trained round: ``num-examples`` (crops trained on; the FedAvg weight), ``members``
    (consenting members with crops), ``declined`` 0, ``loss-first-epoch`` and
    ``loss-last-epoch`` (mean CosFace loss per crop), ``train-seconds`` and ``arrays-bytes``
    (bytes of array data in the reply). For a declined one, only ``declined`` 1
    (:func:`declined_metrics`): no count of any kind.
    """
    if answer.arrays is None or answer.declined:
        return declined_metrics()
    return MetricRecord(
        {
            WEIGHT_KEY: answer.examples,
            "members": answer.members,
            DECLINED_KEY: 0,
            "loss-first-epoch": answer.loss_first_epoch,
            "loss-last-epoch": answer.loss_last_epoch,
            "train-seconds": answer.seconds,
            "arrays-bytes": sent.count_bytes(),
        }
    )


def _declined(reply: Message) -> bool:
    """Whether ``reply`` is a declining store's: no arrays at all."""
    return not any(record for record in reply.content.array_records.values())


def _packed_record(answer: RoundAnswer, received_order: list[str]) -> ArrayRecord:
    """The trained backbone's packed arrays in the order the global model's came.

    Refused unless they are exactly the received ones: the coordinator averages the packed
    arrays number by number, so a mismatch is caught here, where it can be explained. The
    received order is what Flower's ``fixedclipping_mod`` pairs the arrays by.
    """
    assert answer.arrays is not None
    if set(answer.arrays) != set(received_order):
        raise StoreRoundError(
            "the trained backbone's tensors differ from the global model's; update loyalnet "
            "on this store or on the coordinator so both send the same backbone."
        )
    return ArrayRecord({name: Array(answer.arrays[name]) for name in received_order})


def _store_dir(context: Context) -> Path:
    value = context.node_config.get(STORE_DIR_KEY)
    if not isinstance(value, str) or not value:
        raise StoreRoundError(
            f"this SuperNode has no {STORE_DIR_KEY} node config; start it with "
            f"--node-config '{STORE_DIR_KEY}=\"/path/to/store\"'."
        )
    return Path(value)


def _set_threads(context: Context) -> None:
    threads = context.node_config.get(THREADS_KEY)
    if threads is None:
        return
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise StoreRoundError(f"node config {THREADS_KEY} must be a whole number >= 1.")
    import torch

    # Each message runs in a fresh process, so this touches only this round's training.
    torch.set_num_threads(threads)
