"""Bounding how far one store can move the global model: a cap on the weight its count of
crops buys, and a bound on the length of its update.

For the global model w_t and the updates d_i = w_i - w_t of the m stores that trained (each
screened by :mod:`coordinator.update_screening`), FedAvg releases

    w_{t+1} = w_t + sum_i p_i d_i,    p_i = n_i / sum_j n_j.

Store k alone moves the result by p_k d_k, and it sets both factors itself: reporting
n_k = 1e12 crops makes p_k ~ 1, so w_{t+1} ~ w_k (its model replaces the global one), and
scaling its update by 1e3 makes the step 1e3 times any honest store's. Two bounds limit both:

1. **Weight cap** (``max-weight-multiple`` K, default 5):

       n_i' = min(n_i, floor(K * median_j n_j)).

   The median of the round's reported counts stays between honest counts as long as fewer
   than half of the stores lie (its breakdown point is 1/2; a mean's is 0), so a liar buys at
   most the weight of K median-sized stores: among m stores of the median size,
   p_k <= K / (m - 1 + K), 0.42 for 8 stores at K = 5 instead of ~1. Honest stores keep
   their weights unless one holds more than K times the median: in the default simulation
   experiment the largest store has ~2.2 times the median's crops. (A cap at a fixed share of
   the round's total would need an iterative fill and cannot hold with 2 stores; a cap on the
   median is one line and states the same bound.)

2. **Norm bound** (``max-update-norm`` B, default 0.5):

       d_i' = d_i * min(1, B / ||d_i||_2),

   the norm taken over every trained parameter of the backbone at once (as Flower's and
   McMahan et al.'s clipping, https://arxiv.org/abs/1710.06963). With the default training
   settings updates measured 1e-4 to 0.057, and 0.09 at learning rate 0.01
   (:mod:`coordinator.run_config`), so B leaves honest updates as they are, while an update
   scaled by 1e3 comes back to length B. Sun et al. ("Can You Really Backdoor Federated
   Learning?", 2019, https://arxiv.org/abs/1911.07963) found such norm bounding the effective
   defence against boosted updates.

Together, store k can take the round's result at most

    ||p_k (d_k' - a)|| <= p_k (B + ||a||)

away from a, the other stores' average: with 8 stores at the defaults, 0.42 * (0.5 + 0.06),
against the 1e3 or so of the unbounded attacks. A private run weighs every store the same and
clips at ``dp-clipping-norm`` (:mod:`coordinator.store_privacy`, which counts the updates that
came unclipped); the norm bound is left to it there.

BatchNorm running means and variances are no parameters: their scale is the features', not
the weights'. With ``freeze-batchnorm`` (the default) every honest store returns them exactly
as received, so the global ones are kept whatever a store sends (:func:`keep_statistics`).
With live BatchNorm they are bounded like the parameters but separately, by the same B, so
that neither can hide a large change of the other in one norm.

Every bound here is deterministic and applied per store, before the replies are averaged in
their arrival-free order (:class:`coordinator.strategy.StoreRounds`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord
from numpy.typing import NDArray

from loyalnet.model_arrays import STATISTICS_SUFFIXES


@dataclass(frozen=True)
class InfluenceBounds:
    """How much one store's reply may count; see the module docstring.

    Attributes:
        max_weight_multiple: K, >= 1: a store weighs at most K times the median store.
        max_update_norm: B, > 0, or None to leave the norms to a private run's clipping.
        frozen_statistics: the run freezes BatchNorm, so the global statistics are kept.
    """

    max_weight_multiple: float
    max_update_norm: float | None
    frozen_statistics: bool


def capped_weights(counts: Sequence[int], multiple: float) -> list[int]:
    """Each count, at most ``floor(multiple * median(counts))`` (and so at least 1 when all are)."""
    if not counts:
        return []
    cap = max(1, math.floor(multiple * float(np.median(np.asarray(counts, dtype=np.float64)))))
    return [min(count, cap) for count in counts]


def bounded_update(
    sent: ArrayRecord, global_arrays: ArrayRecord, bounds: InfluenceBounds
) -> tuple[ArrayRecord, bool]:
    """``sent`` with its update bounded as the module docstring says; True when it was clipped.

    ``sent`` must have the global arrays' names, shapes and dtypes (screened). The arrays come
    back in ``sent``'s order.
    """
    values = {key: array.numpy() for key, array in sent.items()}
    start = {key: global_arrays[key].numpy() for key in sent}
    statistics = [key for key in values if key.endswith(STATISTICS_SUFFIXES)]
    parameters = [key for key in values if not key.endswith(STATISTICS_SUFFIXES)]
    clipped = False
    if bounds.frozen_statistics:
        values.update({key: start[key] for key in statistics})
    groups = [parameters] if bounds.frozen_statistics else [parameters, statistics]
    if bounds.max_update_norm is not None:
        for group in groups:
            clipped |= _clip(values, start, group, bounds.max_update_norm)
    arrays = {key: Array(np.ascontiguousarray(value)) for key, value in values.items()}
    return ArrayRecord(arrays), clipped


def keep_statistics(arrays: ArrayRecord, global_arrays: ArrayRecord) -> ArrayRecord:
    """``arrays`` with every BatchNorm running statistic set back to the global one, bit for bit.

    Averaging equal float32 values with weights that sum to 1 in floating point can still
    change their last bit; frozen statistics must not change at all.
    """
    kept = ArrayRecord()
    for key, array in arrays.items():
        frozen = key.endswith(STATISTICS_SUFFIXES) and key in global_arrays
        kept[key] = global_arrays[key] if frozen else array
    return kept


def update_norm(
    sent: dict[str, NDArray[np.generic]],
    start: dict[str, NDArray[np.generic]],
    keys: Sequence[str],
) -> float:
    """||sent - start||_2 over ``keys``, summed in float64."""
    total = 0.0
    for key in keys:
        step = sent[key].astype(np.float64) - start[key].astype(np.float64)
        # Not np.dot: BLAS threads spin against each other on a busy CPU, 100 times slower here.
        total += float(np.square(step).sum())
    return math.sqrt(total)


def _clip(
    values: dict[str, NDArray[np.generic]],
    start: dict[str, NDArray[np.generic]],
    keys: Sequence[str],
    bound: float,
) -> bool:
    """Shorten the update of ``keys`` in ``values`` to ``bound`` when longer; True if it was."""
    norm = update_norm(values, start, keys)
    if norm <= bound:
        return False
    scale = bound / norm
    for key in keys:
        origin = start[key].astype(np.float64)
        step = values[key].astype(np.float64) - origin
        values[key] = (origin + step * scale).astype(start[key].dtype)
    return True
