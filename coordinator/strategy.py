"""The training strategy: Flower's FedAvg, FedProx, trimmed mean or median, with what a chain
of stores needs.

:class:`StoreRounds` wraps the chosen Flower strategy (as Flower's own differential-privacy
wrappers do) and delegates everything to it, except that:

1. a round waits at most ``store_wait_seconds`` for ``min_available_nodes`` connected stores,
   then fails the run with :class:`TooFewStoresError`. Flower's sampling waits forever.
2. replies from stores that declined (an empty array record and ``declined`` 1, or from an
   older store ``num-examples`` 0; see ``store_node.client_app``) are left out before
   averaging: FedAvg would reject their empty array record as inconsistent with the others,
   and when every store declines it would divide by a total weight of 0. Left out, such a
   round aggregates nothing and the global model stays as it was.
3. no single store's reply is trusted (:func:`build_strategy` turns this on): a reply that is
   no update of the global model (NaN or infinity, other names, shapes or dtypes, a
   ``num-examples`` that is no whole number >= 1) is rejected and logged with its reason
   (:mod:`coordinator.update_screening`); of the rest, each store's weight is capped at
   ``max-weight-multiple`` times the round's median and each update's L2 norm bounded by
   ``max-update-norm`` (:mod:`coordinator.store_influence`).
4. a reply sent as its float16 change (run config ``update-encoding``) is turned back into
   float32 weights first (:mod:`loyalnet.update_encoding`), so the rest sees what a float32
   reply would be; one that does not fit the global model is rejected.
5. each round's metrics are store-level aggregates (:func:`aggregate_round_metrics`) plus
   counts of the stores asked, trained, declined, rejected and failed (an error reply, or no
   reply before the round's timeout: a dead store's SuperNode misses its heartbeats and the
   SuperLink answers for it with an error after about a minute), and of the updates whose
   norm was clipped (``updates-clipped``) and weights capped (``weights-capped``).

Only the accepted stores' replies reach the wrapped strategy, in an order that does not depend
on when they arrived. In a differentially private run (``dp-noise-multiplier`` > 0) that
strategy is :class:`coordinator.store_privacy.StorePrivacy` around FedAvg or FedProx, so the DP
noise is sized to the stores actually averaged.

The robust strategies are Flower's own: ``"trimmed-mean"`` is FedTrimmedAvg and ``"median"``
FedMedian (Yin, Chen, Ramchandran and Bartlett, "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates", ICML 2018, https://arxiv.org/abs/1803.01498). For the m
stores' models w_1..w_m and each number (coordinate) c, the median takes the median of
w_1[c]..w_m[c]; the trimmed mean sorts them, drops the floor(beta m) lowest and highest
(beta = ``trim-fraction``) and averages the rest. Both weigh every store the same (a store
claiming more crops gains nothing), and as long as fewer stores than are cut off (trimmed mean)
or fewer than half of them (median) send values far off, each coordinate stays within the
range of the others' values. They run after the same screening and bounds as FedAvg.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import partial
from logging import INFO, WARNING

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedMedian, FedProx, FedTrimmedAvg, Strategy
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from coordinator.errors import RunConfigError, TooFewStoresError
from coordinator.run_config import MEAN_STRATEGIES, FederationSettings, StrategyName
from coordinator.store_influence import (
    InfluenceBounds,
    bounded_update,
    capped_weights,
    keep_statistics,
)
from coordinator.store_privacy import StorePrivacy
from coordinator.update_screening import (
    EXAMPLES_KEY,
    is_declined,
    rejection,
    reported_examples,
    reported_metrics,
)
from loyalnet.update_encoding import (
    UpdateEncodingError,
    decode_float16_delta,
    is_float16_delta,
)

WEIGHT_KEY = EXAMPLES_KEY
"""The reply metric FedAvg weights by: the crops a store trained on (capped, see above)."""


RoundListener = Callable[[int, MetricRecord], None]
"""Told each round's number and aggregate metrics as the round ends."""


def build_strategy(
    settings: FederationSettings, on_round: RoundListener | None = None
) -> StoreRounds:
    """The run's averaging strategy, wrapped in :class:`StoreRounds` with every store screened.

    Each round asks ``fraction-train`` of the connected stores (all by default), sampled by
    Flower, and needs at least ``min-stores`` of them. There is no federated evaluation round:
    the stores have no evaluate handler, and the model is judged when a store adopts it. A
    private run wraps the averaging strategy in :class:`StorePrivacy`, which bounds the
    updates' norms itself.
    """
    kinds: dict[StrategyName, Callable[..., FedAvg]] = {
        "fedavg": FedAvg,
        "fedprox": partial(FedProx, proximal_mu=settings.proximal_mu),
        "trimmed-mean": partial(FedTrimmedAvg, beta=settings.trim_fraction),
        "median": FedMedian,
    }
    inner: Strategy = kinds[settings.strategy](
        fraction_train=settings.fraction_train,
        fraction_evaluate=0.0,
        min_train_nodes=settings.min_stores,
        min_available_nodes=settings.min_stores,
        weighted_by_key=WEIGHT_KEY,
        train_metrics_aggr_fn=aggregate_round_metrics,
    )
    if settings.private:
        if settings.strategy not in MEAN_STRATEGIES or not isinstance(inner, FedAvg):
            raise RunConfigError(
                f"a private run (dp-noise-multiplier > 0) cannot use strategy "
                f"{settings.strategy!r}: its noise is sized for a mean. Use 'fedavg' or "
                "'fedprox', or set dp-noise-multiplier to 0."
            )
        inner = StorePrivacy(
            inner, settings.dp_noise_multiplier, settings.dp_clipping_norm, settings.dp_delta
        )
    bounds = InfluenceBounds(
        max_weight_multiple=settings.max_weight_multiple,
        max_update_norm=None if settings.private else settings.max_update_norm,
        frozen_statistics=settings.training.get("freeze-batchnorm") is True,
    )
    return StoreRounds(
        inner, settings.min_stores, settings.store_wait_seconds, bounds, on_round=on_round
    )


class StoreRounds(Strategy):
    """A FedAvg-family strategy with the store handling described in the module docstring.

    Args:
        inner: the strategy that aggregates the accepted replies.
        min_stores: connected stores a round waits for.
        store_wait_seconds: how long it waits for them.
        bounds: screen every reply and bound its influence (:func:`build_strategy` always
            does); None averages whatever the stores that did not decline sent, for tests of
            the averaging alone.
        on_round: told each round's aggregate metrics as soon as the round is aggregated
            (the control plane shows a run's rounds as they happen).
    """

    def __init__(
        self,
        inner: Strategy,
        min_stores: int,
        store_wait_seconds: float,
        bounds: InfluenceBounds | None = None,
        *,
        on_round: RoundListener | None = None,
    ) -> None:
        self.inner = inner
        self.on_round = on_round
        self.min_stores = min_stores
        self.store_wait_seconds = store_wait_seconds
        self.bounds = bounds
        self._asked = 0
        self._round_started = 0.0
        self._global = ArrayRecord()

    def summary(self) -> None:
        """Log the wrapped strategy's settings, the store wait and the bounds."""
        log(INFO, "\t├──> Waits at most %.0f s for stores each round", self.store_wait_seconds)
        if self.bounds is not None:
            log(
                INFO,
                "\t├──> Screens every update; weight <= %g x the median store's, update norm <= %s",
                self.bounds.max_weight_multiple,
                self.bounds.max_update_norm or "the DP clipping norm",
            )
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Wait (bounded) for enough stores, then let the wrapped strategy ask them all."""
        wait_for_stores(grid, self.min_stores, self.store_wait_seconds)
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self._global = arrays
        self._asked = len(messages)
        self._round_started = time.monotonic()
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the accepted stores' bounded updates; count every kind of store."""
        replies = list(replies)
        failed = [reply for reply in replies if reply.has_error()]
        answered = [reply for reply in replies if not reply.has_error()]
        declined = [reply for reply in answered if is_declined(reply.content)]
        offered = [reply for reply in answered if not is_declined(reply.content)]
        offered, undecodable = self._decoded(offered)
        if declined or failed:
            log(
                INFO,
                "aggregate_train: %d store(s) declined the round, %d failed",
                len(declined),
                len(failed),
            )
        counted, rejected, clipped, capped = offered, undecodable, 0, 0
        if self.bounds is not None:
            counted, rejected, clipped, capped = self._screen(offered, self.bounds)
            rejected += undecodable
        # Replies arrive in whatever order the stores finish; averaging them in a fixed order
        # makes the float sums, and so a run, reproducible.
        counted.sort(key=_arrival_free_order)
        arrays, metrics = self.inner.aggregate_train(server_round, counted)
        if arrays is not None and self.bounds is not None and self.bounds.frozen_statistics:
            arrays = keep_statistics(arrays, self._global)
        metrics = metrics if metrics is not None else MetricRecord()
        metrics["stores-asked"] = self._asked
        metrics["stores-trained"] = len(counted)
        metrics["stores-declined"] = len(declined)
        metrics["stores-rejected"] = rejected
        metrics["stores-failed"] = len(failed) + max(0, self._asked - len(replies))
        metrics["updates-clipped"] = clipped
        metrics["weights-capped"] = capped
        metrics["round-seconds"] = time.monotonic() - self._round_started
        if self.on_round is not None:
            self.on_round(server_round, metrics)
        return arrays, metrics

    def _decoded(self, offered: list[Message]) -> tuple[list[Message], int]:
        """The replies with float16 changes turned into float32 weights, and how many could
        not be (left out, logged)."""
        kept: list[Message] = []
        for reply in offered:
            arrays = reply.content.array_records.get("arrays")
            if arrays is None or not is_float16_delta(arrays):
                kept.append(reply)
                continue
            try:
                reply.content["arrays"] = decode_float16_delta(arrays, self._global)
            except UpdateEncodingError as err:
                log(
                    WARNING,
                    "aggregate_train: the update of store node %d is rejected, not averaged: %s",
                    reply.metadata.src_node_id,
                    err,
                )
                continue
            kept.append(reply)
        return kept, len(offered) - len(kept)

    def _screen(
        self, offered: list[Message], bounds: InfluenceBounds
    ) -> tuple[list[Message], int, int, int]:
        """The accepted replies, rewritten to bounded updates and capped weights, and the
        counts of rejected replies, clipped updates and capped weights."""
        accepted: list[Message] = []
        for reply in offered:
            reason = rejection(reply.content, self._global)
            if reason is None:
                accepted.append(reply)
                continue
            log(
                WARNING,
                "aggregate_train: the update of store node %d is rejected, not averaged: %s. "
                "Check that store's loyalnet version and logs.",
                reply.metadata.src_node_id,
                reason,
            )
        counts = [reported_examples(reply.content) for reply in accepted]
        weights = capped_weights(counts, bounds.max_weight_multiple)
        clipped = 0
        for reply, weight in zip(accepted, weights, strict=True):
            array_name = next(iter(reply.content.array_records))
            metric_name = next(iter(reply.content.metric_records))
            arrays, shortened = bounded_update(
                reply.content.array_records[array_name], self._global, bounds
            )
            clipped += shortened
            reply.content[array_name] = arrays
            reply.content[metric_name] = reported_metrics(reply.content, weight)
        capped = sum(weight < count for weight, count in zip(weights, counts, strict=True))
        if clipped or capped:
            log(
                INFO,
                "aggregate_train: %d update(s) shortened to norm %s, %d weight(s) capped",
                clipped,
                bounds.max_update_norm,
                capped,
            )
        return accepted, len(offered) - len(accepted), clipped, capped

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegated (no evaluation round is configured; see :func:`build_strategy`)."""
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Delegated."""
        return self.inner.aggregate_evaluate(server_round, replies)


def wait_for_stores(grid: Grid, needed: int, timeout_seconds: float) -> None:
    """Return once ``needed`` stores are connected; polls every second.

    Raises:
        TooFewStoresError: still fewer after ``timeout_seconds``.
    """
    waiting = Retrying(
        retry=retry_if_result(lambda connected: connected < needed),
        stop=stop_after_delay(timeout_seconds),
        wait=wait_fixed(1.0),
    )
    try:
        waiting(lambda: len(list(grid.get_node_ids())))
    except RetryError as err:
        connected = err.last_attempt.result()
        raise TooFewStoresError(
            f"only {connected} of the {needed} stores the run needs (min-stores) connected "
            f"within {timeout_seconds:.0f} s; start more SuperNodes or lower min-stores."
        ) from None


def aggregate_round_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """One round's metrics over the stores that trained: totals, weighted means and maxima.

    ``num-examples``, ``members`` and ``arrays-bytes`` are summed; the losses are averaged
    weighted by ``num-examples`` (so they are the mean loss per crop over all stores);
    ``train-seconds`` is the slowest store's. Flower's default would weight-average everything,
    counts included, which reads as nonsense for counts. ``weight_key``, what the model was
    averaged by (Flower passes it), is not used: a private run averages the model with every
    store weighing the same, and its metrics are still per crop.
    """
    totals: dict[str, float] = {}
    weighted: dict[str, float] = {}
    slowest = 0.0
    total_weight = 0.0
    for record in records:
        metrics = next(iter(record.metric_records.values()), MetricRecord())
        weight = float(_number(metrics, WEIGHT_KEY))
        total_weight += weight
        for key in (WEIGHT_KEY, "members", "arrays-bytes"):
            totals[key] = totals.get(key, 0.0) + _number(metrics, key)
        for key in ("loss-first-epoch", "loss-last-epoch"):
            weighted[key] = weighted.get(key, 0.0) + weight * _number(metrics, key)
        slowest = max(slowest, _number(metrics, "train-seconds"))
    summary = MetricRecord({key: int(value) for key, value in totals.items()})
    for key, value in weighted.items():
        summary[key] = value / total_weight if total_weight else 0.0
    summary["train-seconds"] = slowest
    return summary


def _arrival_free_order(reply: Message) -> tuple[float, ...]:
    """A sort key from what a reply holds (its metrics), not from when it came."""
    metrics = next(iter(reply.content.metric_records.values()), MetricRecord())
    keys = (WEIGHT_KEY, "members", "loss-first-epoch", "loss-last-epoch")
    return tuple(_number(metrics, key) for key in keys)


def _number(metrics: MetricRecord, key: str) -> float:
    value = metrics.get(key, 0.0)
    return float(value) if isinstance(value, int | float) else 0.0
