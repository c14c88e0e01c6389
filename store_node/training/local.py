"""One round of local training on a store: its consenting members' crops, a CosFace head, SGD.

The round, for the backbone w received from the coordinator (w_global):

1. read the enrolment crops of members whose consent in force includes model improvement
   (:func:`store_node.gallery.training_data.training_examples`); with fewer than
   ``min_members`` such members, or fewer than the store's own floor (``store.toml``
   ``[training] min_members``, whatever the run asks), decline: nothing is trained, nothing
   is sent;
2. load each member's class row from the gallery, or start it at the member's mean embedding
   under w_global (:mod:`.cosface`);
3. for ``local_epochs`` passes over the crops in a seeded random order, minimise the CosFace
   loss of augmented crops (:mod:`.augment`), plus the FedProx term (mu / 2) ||w - w_global||^2
   when ``proximal_mu`` > 0 (:mod:`.proximal`), with SGD;
4. seal the updated class rows back into the gallery and return w (:func:`backbone_state`).

The store keeps recognising with the model it has: training touches no template and not the
store's recognition model (see :mod:`store_node.retemplate` for adopting a new one).

SGD with momentum 0.9 (no Adam): it is the optimiser the margin-softmax face models, this
MobileFaceNet included, were trained with, so the pretrained weights sit in a region where its
steps are well behaved; FedAvg and FedProx are analysed for local SGD, and SGD keeps no
per-parameter state that would have to be reset (or leaked) between rounds; momentum smooths
the noisy gradients of small batches of few members. The momentum buffer starts at zero every
round. Weight decay applies to the backbone only: the class rows are normalised in every
forward pass, so decay would only shrink their norm and so inflate their effective step size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from store_node.config import TRAINING_TABLE, StorePaths, read_config
from store_node.face.mobilefacenet import EMBEDDING_DIM, MobileFaceNet
from store_node.gallery import Gallery
from store_node.gallery.class_weights import load_class_weights, save_class_weights
from store_node.gallery.training_data import TrainingSet, training_examples
from store_node.training.augment import AugmentConfig, augment
from store_node.training.backbone import (
    backbone_state,
    freeze_batchnorm_statistics,
    freeze_leading_layers,
    load_backbone,
)
from store_node.training.cosface import CosFaceHead, mean_embeddings
from store_node.training.errors import TrainingError
from store_node.training.proximal import parameter_anchor, proximal_term

MOMENTUM = 0.9

__all__ = [
    "TrainingConfig",
    "TrainingOutcome",
    "backbone_state",
    "train_store_round",
]


@dataclass(frozen=True)
class TrainingConfig:
    """Settings of a local round; the values come from the Flower run config.

    Attributes:
        local_epochs: passes over the store's crops per round, >= 1.
        batch_size: crops per SGD step, >= 2.
        learning_rate: SGD step size, > 0 (momentum 0.9, see the module docstring). The
            default, 0.001, is also the coordinator's run config default; 0.01 is too much for
            fine-tuning the pretrained backbone on stores this small: measured on one store of
            10 Extended Yale B people x 5 crops, 0.01 pulled the backbone off its general
            solution (LFW accuracy on 1,200 View 2 pairs 99.42% -> 98.33% after three
            1-epoch rounds, 86.6% after one 5-epoch round; Yale rank-1 97.7% -> 92% / 72%)
            while 0.001 kept it (99.50% / 99.00%; 98.0% / 97.3%).
        weight_decay: L2 penalty on the backbone's parameters, >= 0.
        margin: CosFace cosine margin m, in [0, 1).
        scale: CosFace logit scale s, > 0.
        proximal_mu: FedProx coefficient mu >= 0; 0 is plain FedAvg local training.
        min_members: a store with fewer consenting members (with crops) declines the round,
            >= 2. Few members give a head that separates few people, an update that
            over-fits them, and an update from which a single member's face is easier to
            infer.
        freeze_batchnorm: True (default): BatchNorm normalises with the global running
            statistics and keeps them, while its scale and shift still train. Batches of a few
            crops of a few people give noisy, biased batch statistics that would pull the
            pretrained ones (from 3.8M faces) off; frozen statistics also leave nothing of the
            store's feature distribution in the message (see :mod:`.backbone`).
        frozen_layers: the first this many of MobileFaceNet's 21 layers keep the received
            weights (``freeze_leading_layers``); 0 (default) fine-tunes them all.
        seed: seeds the order of the crops and the augmentation; same seed, same data, same
            thread count -> the same backbone. Give each round its own (e.g. the run's seed
            plus the server round), or every round sees the same augmented views.
    """

    local_epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.001
    weight_decay: float = 5e-4
    margin: float = 0.35
    scale: float = 30.0
    proximal_mu: float = 0.0
    min_members: int = 5
    freeze_batchnorm: bool = True
    frozen_layers: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        problems = [
            name
            for name, ok in (
                ("local_epochs >= 1", self.local_epochs >= 1),
                ("batch_size >= 2", self.batch_size >= 2),
                ("learning_rate > 0", self.learning_rate > 0),
                ("weight_decay >= 0", self.weight_decay >= 0),
                ("0 <= margin < 1", 0 <= self.margin < 1),
                ("scale > 0", self.scale > 0),
                ("proximal_mu >= 0", self.proximal_mu >= 0),
                ("min_members >= 2", self.min_members >= 2),
                ("frozen_layers >= 0", self.frozen_layers >= 0),
            )
            if not ok
        ]
        numbers = (self.learning_rate, self.weight_decay, self.margin, self.scale)
        if problems or not all(math.isfinite(x) for x in (*numbers, self.proximal_mu)):
            raise TrainingError(
                f"invalid training config {self}: need {', '.join(problems) or 'finite numbers'}; "
                "fix the run config."
            )

    @classmethod
    def from_run_config(cls, values: Mapping[str, object]) -> TrainingConfig:
        """The config from a Flower run config: keys as the field names (``-`` or ``_``).

        Keys that are not fields are ignored (the run config carries the server's settings
        too); missing fields keep their defaults.

        Raises:
            TrainingError: a value has the wrong type or range.
        """
        chosen: dict[str, object] = {}
        types = {field.name: field.type for field in fields(cls)}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in types:
                continue
            coerced = _coerce(str(types[name]), value)
            if coerced is None:
                raise TrainingError(
                    f"run config {key} = {value!r} should be a {types[name]}; fix the run config."
                )
            chosen[name] = coerced
        return cls(**chosen)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TrainingOutcome:
    """What a store's round produced.

    Attributes:
        backbone: exactly the tensors to send (a ``backbone_state``); None when declined.
        examples: crops trained on (the FedAvg weight); 0 when declined, so a declining store
            is not counted.
        members: consenting members with crops (classes); counted even when declined, for
            the store's own log (a declining reply does not carry it).
        loss_first_epoch: mean CosFace loss (without the proximal term) over the first epoch,
            nats per crop; 0.0 when declined. With a few dozen crops it is dominated by how
            hard that epoch's augmentation draw was, so it tracks progress only on average
            over stores or rounds.
        loss_last_epoch: the same over the last epoch.
        seconds: wall time of the round.
        declined: '' when trained, else why not, e.g. 'only 3 consenting members, the run
            needs 5'. For the store's log: a declining store sends no reason and no count.
        new_class_weights: class rows started this round from mean embeddings (members seen
            for the first time); the others were loaded from the gallery.
    """

    backbone: dict[str, torch.Tensor] | None
    examples: int
    members: int
    loss_first_epoch: float
    loss_last_epoch: float
    seconds: float
    declined: str
    new_class_weights: int = 0


def train_store_round(
    store_dir: Path,
    global_backbone: Mapping[str, torch.Tensor],
    config: TrainingConfig,
    *,
    now: datetime | None = None,
    augmentation: AugmentConfig | None = None,
) -> TrainingOutcome:
    """Train the global backbone on this store's consenting members for one round.

    Args:
        store_dir: the store folder (``gallery.db``, ``store.key`` and ``store.toml``, whose
            ``[training] min_members`` the store never trains below).
        global_backbone: the round's starting model, a ``backbone_state``.
        config: the run's settings.
        now: the instant consent is judged at; None is the current time.
        augmentation: augmentation strengths; None uses ``AugmentConfig()``.

    Returns:
        The new backbone and the round's numbers, or a declined outcome.

    Raises:
        TrainingError: the backbone does not fit MobileFaceNet, or training diverged.
        GalleryError: the store's gallery or key cannot be opened.
        LoyalnetError: the store's ``store.toml`` is missing or invalid.
    """
    started = time.perf_counter()
    paths = StorePaths(Path(store_dir))
    floor = read_config(paths).training.min_members
    with Gallery.open(paths.database, paths.key) as gallery:
        data = training_examples(gallery, now)
        if data.members < max(config.min_members, floor):
            reason = f"only {data.members} consenting members, the run needs {config.min_members}"
            if floor > config.min_members:
                reason = (
                    f"only {data.members} consenting members, this store trains on no fewer "
                    f"than {floor} (store.toml [{TRAINING_TABLE}] min_members)"
                )
            return TrainingOutcome(
                None, 0, data.members, 0.0, 0.0, time.perf_counter() - started, reason
            )
        network = load_backbone(global_backbone)
        stored = load_class_weights(gallery, data.member_ids)
        rows, fresh = _initial_rows(network, data, stored)
        head = CosFaceHead(rows, scale=config.scale, margin=config.margin)
        losses = _fit(network, head, data, config, augmentation or AugmentConfig())
        save_class_weights(gallery, dict(zip(data.member_ids, head.rows(), strict=True)), now)
    return TrainingOutcome(
        backbone=backbone_state(network),
        examples=data.examples,
        members=data.members,
        loss_first_epoch=losses[0],
        loss_last_epoch=losses[-1],
        seconds=time.perf_counter() - started,
        declined="",
        new_class_weights=fresh,
    )


def _coerce(kind: str, value: object) -> bool | int | float | None:
    """``value`` as a field of type ``kind`` ("bool", "int" or "float"), or None if it is not."""
    if kind == "bool":
        return value if isinstance(value, bool) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if kind == "int":
        return value if isinstance(value, int) else None
    try:
        return float(value)
    except OverflowError:  # an int beyond any float: no valid setting either
        return None


def _initial_rows(
    network: torch.nn.Module, data: TrainingSet, stored: Mapping[str, NDArray[np.float32]]
) -> tuple[torch.Tensor, int]:
    """(M, 128) starting rows: stored ones, else mean embeddings; and how many were new."""
    missing = [i for i, member in enumerate(data.member_ids) if member not in stored]
    rows = torch.zeros(data.members, EMBEDDING_DIM)
    for i, member in enumerate(data.member_ids):
        if member in stored:
            rows[i] = torch.from_numpy(stored[member])
    if missing:
        # Embed only the crops of new members, relabelled 0..len(missing)-1.
        relabel = np.full(data.members, -1, dtype=np.int64)
        relabel[missing] = np.arange(len(missing))
        chosen = relabel[data.labels] >= 0
        means = mean_embeddings(
            network, data.crops[chosen], relabel[data.labels][chosen], len(missing)
        )
        rows[missing] = means
    return rows, len(missing)


def _fit(
    network: MobileFaceNet,
    head: CosFaceHead,
    data: TrainingSet,
    config: TrainingConfig,
    augmentation: AugmentConfig,
) -> list[float]:
    """Train in place; the mean CosFace loss of each epoch."""
    generator = torch.Generator().manual_seed(config.seed)
    network.train()
    if config.freeze_batchnorm:
        freeze_batchnorm_statistics(network)
    freeze_leading_layers(network, config.frozen_layers)
    anchor = parameter_anchor(network) if config.proximal_mu > 0 else {}
    optimiser = torch.optim.SGD(
        [
            {
                "params": [p for p in network.parameters() if p.requires_grad],
                "weight_decay": config.weight_decay,
            },
            {"params": list(head.parameters()), "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
        momentum=MOMENTUM,
    )
    labels = torch.from_numpy(data.labels)
    losses: list[float] = []
    for _ in range(config.local_epochs):
        order = torch.randperm(data.examples, generator=generator)
        total = 0.0
        for batch in _batches(order, config.batch_size, not config.freeze_batchnorm):
            pixels = augment(data.crops[batch.numpy()], generator, augmentation)
            loss = head.loss(network(pixels), labels[batch])
            objective = loss + proximal_term(network, anchor, config.proximal_mu)
            optimiser.zero_grad(set_to_none=True)
            objective.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / data.examples)
        if not math.isfinite(losses[-1]):
            raise TrainingError(
                f"local training diverged (loss {losses[-1]}); lower learning_rate in the run "
                "config and restart the round."
            )
    return losses


def _batches(order: torch.Tensor, size: int, batch_statistics: bool) -> list[torch.Tensor]:
    """``order`` cut into batches of ``size``; with live BatchNorm statistics a last batch of
    one crop joins the one before, as a batch of one has no variance to normalise with."""
    batches = list(torch.split(order, size))
    if batch_statistics and len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches
