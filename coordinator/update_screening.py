"""Screening a store's reply before it is averaged: anything that is not an update of the
global model, with a true count of crops, is rejected.

FedAvg (McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
Data", AISTATS 2017, https://arxiv.org/abs/1602.05629) releases

    w_{t+1} = sum_i (n_i / sum_j n_j) w_i

over the stores i that trained, w_i the model store i sent and n_i the crops it says it trained
on. Every term is taken on trust, and one bad term is enough to break the sum for every store:

- a NaN or infinity anywhere in one w_i is in w_{t+1} (NaN * p + x = NaN), and every store
  that adopts the model then embeds every face as NaN;
- a w_i with other tensor names, shapes or dtypes makes Flower's FedAvg refuse the whole
  round (or, for a name set that matches, broadcast garbage into the sum);
- an n_i that is 0, negative, fractional or not finite is no count of crops: 0 divides by 0
  when it is the only one, a negative one flips the sign of the update, NaN poisons the sum;
- a BatchNorm running variance below 0 is no variance: normalising divides by its square
  root, NaN again.

So a reply is averaged only when (checked in this order; the first failure is the reason
logged and the reply is counted in the round's ``stores-rejected``):

1. it holds exactly one array record and one metric record;
2. the array record's names are exactly the global model's, each array with the global's
   shape and dtype, declared and as read from its bytes (which must be a NumPy array);
3. every value is finite, and every ``.running_var`` is >= 0;
4. ``num-examples`` is a whole number from 1 to 2**53 (an int, or a float with no fraction;
   above 2**53 a float no longer tells whole numbers apart, and no store has that many
   crops). How much a plausible but inflated count may weigh is capped in
   :mod:`coordinator.store_influence`;
5. each of the other metrics the round reports (:data:`ROUND_METRICS`) that it carries is
   a finite number.

A reply that passes has its metric record rewritten to exactly :data:`ROUND_METRICS` (a
missing one reads 0): Flower's FedAvg refuses a round whose replies' metric names differ, so
one store with an extra or a missing metric would otherwise end the round for all of them.

What screening cannot catch is a well-formed update that is simply wrong: finite, right
shapes, a plausible count. Blanchard et al. ("Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent", NeurIPS 2017, https://arxiv.org/abs/1703.02757) show that one
such participant can move any weighted average anywhere. Bounding how far one store can move
the average is :mod:`coordinator.store_influence`; resisting it per coordinate is the
``trimmed-mean`` and ``median`` strategies (:mod:`coordinator.strategy`).

A store that declines a round (too few consenting members) is neither trained nor rejected:
it replies with an empty array record and the metric ``declined`` = 1 and nothing else, or,
from a store running an older loyalnet, an empty array record and ``num-examples`` 0
(:func:`is_declined`).
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from loyalnet.model_arrays import RUNNING_VARIANCE_SUFFIX

EXAMPLES_KEY = "num-examples"
"""The reply metric FedAvg weights by: the crops the store trained on."""
DECLINED_KEY = "declined"
"""1 in the metrics of a store that declined the round."""
ROUND_METRICS = (
    EXAMPLES_KEY,
    "members",
    "loss-first-epoch",
    "loss-last-epoch",
    "train-seconds",
    "arrays-bytes",
)
"""The metrics a trained reply is reduced to (:func:`coordinator.strategy.aggregate_round_metrics`
reads these)."""
MAX_EXAMPLES = 2**53
"""The largest ``num-examples`` a reply may report (see check 4 of the module docstring)."""


def is_declined(content: RecordDict) -> bool:
    """Whether the reply says its store declined: no arrays, and ``declined`` 1 or 0 crops."""
    if any(len(record) for record in content.array_records.values()):
        return False
    for metrics in content.metric_records.values():
        if metrics.get(DECLINED_KEY) == 1 or metrics.get(EXAMPLES_KEY) == 0:
            return True
    return False


def rejection(content: RecordDict, global_arrays: ArrayRecord) -> str | None:
    """Why the reply cannot be averaged into ``global_arrays``' successor; None when it can.

    The reason is a sentence for the coordinator's log (see the module docstring).
    """
    if len(content.array_records) != 1 or len(content.metric_records) != 1:
        return (
            f"it holds {len(content.array_records)} array and {len(content.metric_records)} "
            "metric records, not one of each"
        )
    arrays = next(iter(content.array_records.values()))
    reason = _arrays_rejection(arrays, global_arrays)
    if reason is not None:
        return reason
    return _metrics_rejection(next(iter(content.metric_records.values())))


def reported_examples(content: RecordDict) -> int:
    """The ``num-examples`` of a reply that :func:`rejection` accepted."""
    metrics = next(iter(content.metric_records.values()))
    return int(_as_float(metrics.get(EXAMPLES_KEY)) or 0)


def reported_metrics(content: RecordDict, examples: int) -> MetricRecord:
    """An accepted reply's metrics reduced to :data:`ROUND_METRICS` (0 for a missing one),
    with ``num-examples`` set to ``examples`` (the weight it is averaged with)."""
    metrics = next(iter(content.metric_records.values()))
    kept = MetricRecord()
    for key in ROUND_METRICS:
        value = metrics.get(key, 0)
        kept[key] = value if _as_float(value) is not None else 0
    kept[EXAMPLES_KEY] = examples
    return kept


def _arrays_rejection(arrays: ArrayRecord, global_arrays: ArrayRecord) -> str | None:
    missing = sorted(set(global_arrays) - set(arrays))
    unexpected = sorted(set(arrays) - set(global_arrays))
    if missing or unexpected:
        return (
            f"its arrays are not the global model's: {len(missing)} missing (e.g. "
            f"{missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    for key, expected in global_arrays.items():
        sent = arrays[key]
        if tuple(sent.shape) != tuple(expected.shape) or sent.dtype != expected.dtype:
            return (
                f"array {key} is {sent.dtype} {tuple(sent.shape)}, the global model's is "
                f"{expected.dtype} {tuple(expected.shape)}"
            )
    for key, expected in global_arrays.items():
        try:
            values = arrays[key].numpy()
        except (TypeError, ValueError, OSError, EOFError) as err:
            return f"array {key} cannot be read as a NumPy array ({err})"
        # The declared shape and dtype are the sender's word; the bytes are what is averaged.
        if values.shape != tuple(expected.shape) or str(values.dtype) != expected.dtype:
            return f"array {key} holds {values.dtype} {values.shape}, not what it declares"
        if not np.isfinite(values).all():
            return f"array {key} holds NaN or infinity"
        if key.endswith(RUNNING_VARIANCE_SUFFIX) and bool((values < 0).any()):
            return f"array {key} holds a negative variance"
    return None


def _metrics_rejection(metrics: MetricRecord) -> str | None:
    examples = metrics.get(EXAMPLES_KEY)
    count = _as_float(examples)
    if (
        count is None
        or not math.isfinite(count)
        or not 1 <= count <= MAX_EXAMPLES
        or count != math.floor(count)
    ):
        return f"its {EXAMPLES_KEY} = {examples!r} is not a whole number from 1 to 2**53"
    for key in ROUND_METRICS:
        if key not in metrics:
            continue
        value = _as_float(metrics[key])
        if value is None or not math.isfinite(value):
            return f"its metric {key} = {metrics[key]!r} is not a finite number"
    return None


def _as_float(value: object) -> float | None:
    """``value`` as a float when it is an int or a float (never a bool or a list)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
