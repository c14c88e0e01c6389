"""The baselines federated training is judged against, trained with the store's own round code.

- ``local-only``: each store fine-tunes the pretrained model on its own members and nothing
  else, for as many rounds as the federated runs (no coordinator, nothing sent). It shows what
  a store gains without the chain, and what it loses by over-fitting a handful of people.
- ``centralized``: every store's enrolment crops pooled in one place and the model trained on
  them all, one pass per round: the upper bound that federated learning approaches without
  moving a single face, and exactly what a chain must not do with biometric data.

Both call :func:`store_node.training.local.train_store_round`, the function a store's
ClientApp calls, round after round, on a store folder (the pooled one is a store folder whose
gallery holds everybody), with the seed offset by the round as the ClientApp does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from store_node.trainer.round import round_training_config
from store_node.training.local import train_store_round

TrainedRound = Callable[[int, dict[str, torch.Tensor], float], None]
"""Called with (round, backbone after it, seconds of training) after every round."""


@dataclass(frozen=True)
class AloneOutcome:
    """How training alone went: rounds in which the store declined (too few members)."""

    declined_rounds: int
    reason: str


def train_alone(
    store_dir: Path,
    initial: Mapping[str, torch.Tensor],
    training: Mapping[str, bool | int | float],
    rounds: int,
    after_round: TrainedRound,
) -> AloneOutcome:
    """Fine-tune ``initial`` on one store folder for ``rounds`` rounds, with no one else.

    Args:
        training: the run config's training settings (kebab case, with ``seed``), as the
            coordinator would send them.
        after_round: called after each round with the backbone it produced (the previous one
            when the store declined).
    """
    state = dict(initial)
    declined = 0
    reason = ""
    for server_round in range(1, rounds + 1):
        config = round_training_config({**training, "server-round": server_round})
        started = time.perf_counter()
        outcome = train_store_round(store_dir, state, config)
        seconds = time.perf_counter() - started
        if outcome.backbone is None:
            declined += 1
            reason = outcome.declined
        else:
            state = outcome.backbone
        after_round(server_round, state, seconds)
    return AloneOutcome(declined, reason)
