"""Which tensors of the face embedder travel between the coordinator and the stores.

Both sides apply one rule, so that the model the coordinator starts a run with and the
backbone a store sends back have the same keys (Flower's FedAvg refuses replies whose keys
differ): every entry of MobileFaceNet's state_dict except BatchNorm's ``num_batches_tracked``
step counters. A counter is an integer that averaging turns into a float, it means nothing
here (no BatchNorm runs without momentum), and it would tell the coordinator how many batches
a store ran, i.e. roughly how many members consented. The store side documents the full
reasoning in ``store_node.training.backbone``; this module holds no face code, so the
coordinator can use it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

COUNTER_SUFFIX = "num_batches_tracked"
RUNNING_MEAN_SUFFIX = ".running_mean"
RUNNING_VARIANCE_SUFFIX = ".running_var"
STATISTICS_SUFFIXES = (RUNNING_MEAN_SUFFIX, RUNNING_VARIANCE_SUFFIX)
"""What ends the name of a BatchNorm running statistic, as against a learnable parameter: the
coordinator bounds and freezes statistics apart from parameters, and refuses a variance below 0.
"""


def is_sent_key(key: str) -> bool:
    """True when the state_dict entry ``key`` is part of what travels."""
    return not key.endswith(COUNTER_SUFFIX)


def sent_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of ``state`` that travel, as detached float32 CPU copies, in order.

    float32 because that is what a store trains and sends; a file saved in another precision
    would otherwise make the first round's average change dtype.
    """
    return {
        key: value.detach().to("cpu", torch.float32).clone()
        for key, value in state.items()
        if is_sent_key(key)
    }
