"""The store's answer to one training round: its limits, its lapsed consents, its training.

The same function serves the round in ``loyalnet store serve`` (:mod:`.server`) and, when no
``store serve`` runs, in the ClientApp's own process: one code path, one set of limits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from loyalnet.packed_backbone import BackboneLayout, PackedBackboneError
from store_node.config import StorePaths, read_config
from store_node.gallery import Gallery, GalleryBusyError, ScrubError
from store_node.trainer.answer import PackedArrays, RoundAnswer, StoreRoundError
from store_node.training.backbone import backbone_layout
from store_node.training.floor import SERVER_ROUND_KEY, round_refusal
from store_node.training.local import TrainingConfig, TrainingOutcome, train_store_round

log = logging.getLogger("loyalnet.store.trainer")


def answer_round(
    store_dir: Path, received: Mapping[str, np.ndarray], settings: Mapping[str, object]
) -> RoundAnswer:
    """Train the received global backbone on this store's consenting members, or decline.

    Args:
        store_dir: the store folder.
        received: the round's global model, packed (``loyalnet.packed_backbone``); unpacked
            with the store's own architecture's names and shapes, so the coordinator cannot
            choose them.
        settings: the round's config as Flower delivered it; checked against ``store.toml``'s
            ``[training]`` limits before any training data is read.

    Raises:
        StoreRoundError: the received model does not fit the store's architecture, or the
            trained one does not pack back.
        TrainingError, GalleryError, LoyalnetError: as ``train_store_round``.
    """
    paths = StorePaths(store_dir)
    refusal = round_refusal(settings, read_config(paths).training)
    if refusal:
        return RoundAnswer.declining(refusal, refused=True)
    layout = backbone_layout()
    try:
        global_backbone = layout.unpack(
            {
                name: torch.from_numpy(np.array(array, dtype=np.float32))
                for name, array in received.items()
            }
        )
    except PackedBackboneError as err:
        raise StoreRoundError(str(err)) from None
    purged = purge_expired(paths)
    outcome = train_store_round(store_dir, global_backbone, round_training_config(settings))
    return replace(answer_of(outcome, layout), purged=purged)


def answer_of(outcome: TrainingOutcome, layout: BackboneLayout | None = None) -> RoundAnswer:
    """``outcome`` as the answer sent: the trained backbone packed, and its numbers.

    ``layout`` is the store's ``backbone_layout()`` (built here when None; building it makes
    a whole MobileFaceNet, so a caller that holds it passes it).

    Raises:
        StoreRoundError: the trained backbone lacks a tensor of the layout, or has more (the
            coordinator averages the packed arrays number by number; a mismatch is explained
            here).
    """
    if outcome.backbone is None:
        return RoundAnswer.declining(outcome.declined)
    layout = layout if layout is not None else backbone_layout()
    if set(outcome.backbone) != set(layout.shapes):
        raise StoreRoundError(
            "the trained backbone's tensors differ from the global model's; update loyalnet "
            "on this store or on the coordinator so both send the same backbone."
        )
    packed: PackedArrays = {
        name: tensor.detach().numpy() for name, tensor in layout.pack(outcome.backbone).items()
    }
    return RoundAnswer(
        arrays=packed,
        examples=outcome.examples,
        members=outcome.members,
        loss_first_epoch=outcome.loss_first_epoch,
        loss_last_epoch=outcome.loss_last_epoch,
        seconds=outcome.seconds,
    )


def round_training_config(settings: Mapping[str, object]) -> TrainingConfig:
    """The round's training settings; the seed offset by the round number when it is sent.

    Flower's FedAvg puts ``server-round`` in every training message. Offsetting the run's seed
    by it gives each round its own crop order and augmentation draw (the same seed every round
    would show the network the same augmented views again), and keeps rounds reproducible.
    """
    config = TrainingConfig.from_run_config(dict(settings))
    server_round = settings.get(SERVER_ROUND_KEY)
    if isinstance(server_round, int) and not isinstance(server_round, bool):
        config = replace(config, seed=config.seed + server_round)
    return config


def purge_expired(paths: StorePaths) -> int:
    """Purge the biometrics of members whose consent has lapsed, before they can be trained on.

    A round is also the store's regular purge (``Gallery.purge_expired``; ``loyalnet store
    purge`` does it by hand). Only a count reaches the store's log, and nothing of it the
    coordinator. A purge that has to wait for another program is logged and the round goes
    on: training never reads a lapsed member's crops anyway.

    Returns:
        How many members were purged (0 when the purge had to wait).
    """
    try:
        with Gallery.open(paths.database, paths.key) as gallery:
            report = gallery.purge_expired()
    except (GalleryBusyError, ScrubError) as err:
        log.warning("purging lapsed consents did not finish: %s", err)
        return 0
    if report.member_refs:
        log.info(
            "purged the biometrics of %d member(s) whose consent lapsed", len(report.member_refs)
        )
    return len(report.member_refs)
