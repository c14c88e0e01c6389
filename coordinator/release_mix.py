"""The model a run releases: the starting model moved only part of the way to the last round's.

Wortsman et al., "Robust fine-tuning of zero-shot models" (WiSE-FT), CVPR 2022,
https://arxiv.org/abs/2109.01903: fine-tuning a pretrained network on a narrow set of data
improves it there and costs it under conditions the fine-tuning data did not show; averaging
the weights of the fine-tuned and the pretrained network keeps most of the gain and most of the
robustness, because both lie in one basin of the loss. For a run that started from w_0 and
ended at w_T, the released model is::

    w = w_0 + alpha (w_T - w_0),    0 < alpha <= 1

number by number, over every packed array (parameters and BatchNorm statistics). alpha = 1
releases the last round's model unchanged (the default, ``release-mix`` in the run config).

Measured on ``simulations/experiments/store_conditions_12x1.toml`` (12 rounds of FedProx,
seed 2026; TAR at FAR 1e-2, the pretrained model in brackets): alpha 0.7 keeps 89.8% / 100.6%
of the centralized gain at FAR 1e-2 / 1e-3 (alpha 1: 91% / 110%), brings motion blur from
0.915 back to 0.923 (0.924) and LFW from 99.11% to 99.33% (99.36%), and leaves low resolution
where alpha 1 left it, 0.958 (0.962); the README has the sweep over alpha. The stores never
see this step: they train from the previous round's model each round, and only the model
version written at the end is mixed.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

from coordinator.errors import RunConfigError


def released_model(start: ArrayRecord, final: ArrayRecord, alpha: float) -> ArrayRecord:
    """``start + alpha (final - start)``, array by array, in ``final``'s order and dtypes.

    Args:
        start: the model the run started from (the same packed arrays as ``final``).
        final: the last round's global model.
        alpha: the share of the run's change the released model keeps, in (0, 1].

    Raises:
        RunConfigError: ``alpha`` is outside (0, 1], or the two models do not hold the same
            arrays.
    """
    if not 0 < alpha <= 1:
        raise RunConfigError(f"run config release-mix = {alpha} should be in (0, 1].")
    if alpha == 1:
        return final
    if set(start.keys()) != set(final.keys()):
        raise RunConfigError(
            "the run's starting and final models hold different arrays: "
            f"{sorted(start.keys())} against {sorted(final.keys())}."
        )
    mixed = {}
    for name in final:
        last = final[name].numpy()
        first = start[name].numpy()
        if first.shape != last.shape:
            raise RunConfigError(
                f"array {name!r} is {first.shape} in the starting model and {last.shape} at "
                "the end of the run."
            )
        # In float64 so that alpha = 1 - tiny and w_0 == w_T both come back exactly.
        moved = first.astype(np.float64) + alpha * (last.astype(np.float64) - first)
        mixed[name] = Array(moved.astype(last.dtype))
    return ArrayRecord(mixed)
