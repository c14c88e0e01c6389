"""The training strategy: Flower's FedAvg or FedProx, with three things a chain of stores needs.

:class:`StoreRounds` wraps the chosen Flower strategy (as Flower's own differential-privacy
wrappers do) and delegates everything to it, except that:

1. a round waits at most ``store_wait_seconds`` for ``min_available_nodes`` connected stores,
   then fails the run with :class:`TooFewStoresError`. Flower's sampling waits forever.
2. replies from stores that declined (``num-examples`` 0 and no arrays, see
   ``store_node.client_app``) are left out before averaging: FedAvg would reject their empty
   array record as inconsistent with the others, and when every store declines it would
   divide by a total weight of 0. Left out, such a round aggregates nothing and the global
   model stays as it was.
3. each round's metrics are store-level aggregates (:func:`aggregate_round_metrics`) plus
   counts of the stores asked, trained, declined and failed (an error reply, or no reply
   before the round's timeout: a dead store's SuperNode misses its heartbeats and the SuperLink
   answers for it with an error after about a minute).

Only the trained stores' replies reach the wrapped strategy. In a differentially private run
(``dp-noise-multiplier`` > 0) that strategy is :class:`coordinator.store_privacy.StorePrivacy`
around FedAvg or FedProx, so the DP noise is sized to the stores actually averaged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import partial
from logging import INFO

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx, Strategy
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from coordinator.errors import TooFewStoresError
from coordinator.run_config import FederationSettings
from coordinator.store_privacy import StorePrivacy

WEIGHT_KEY = "num-examples"
"""The reply metric FedAvg weights by; a declining store sends 0."""


def build_strategy(settings: FederationSettings) -> StoreRounds:
    """FedAvg, or FedProx when the run config says so, wrapped in :class:`StoreRounds`.

    Every connected store is asked each round (``fraction_train`` 1.0); a round needs at least
    ``min-stores`` of them. There is no federated evaluation round: the stores have no
    evaluate handler, and the model is judged when a store adopts it. A private run wraps the
    averaging strategy in :class:`StorePrivacy`.
    """
    averaging: Callable[..., FedAvg] = FedAvg
    if settings.strategy == "fedprox":
        averaging = partial(FedProx, proximal_mu=settings.proximal_mu)
    inner = averaging(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=settings.min_stores,
        min_available_nodes=settings.min_stores,
        weighted_by_key=WEIGHT_KEY,
        train_metrics_aggr_fn=aggregate_round_metrics,
    )
    if not settings.private:
        return StoreRounds(inner, settings.min_stores, settings.store_wait_seconds)
    private = StorePrivacy(
        inner, settings.dp_noise_multiplier, settings.dp_clipping_norm, settings.dp_delta
    )
    return StoreRounds(private, settings.min_stores, settings.store_wait_seconds)


class StoreRounds(Strategy):
    """A FedAvg-family strategy with the store handling described in the module docstring."""

    def __init__(self, inner: Strategy, min_stores: int, store_wait_seconds: float) -> None:
        self.inner = inner
        self.min_stores = min_stores
        self.store_wait_seconds = store_wait_seconds
        self._asked = 0
        self._round_started = 0.0

    def summary(self) -> None:
        """Log the wrapped strategy's settings and the store wait."""
        log(INFO, "\t├──> Waits at most %.0f s for stores each round", self.store_wait_seconds)
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Wait (bounded) for enough stores, then let the wrapped strategy ask them all."""
        wait_for_stores(grid, self.min_stores, self.store_wait_seconds)
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self._asked = len(messages)
        self._round_started = time.monotonic()
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the trained stores' updates only; count who trained, declined and failed."""
        replies = list(replies)
        failed = [reply for reply in replies if reply.has_error()]
        answered = [reply for reply in replies if not reply.has_error()]
        declined = [reply for reply in answered if _weight(reply.content) == 0]
        counted = [reply for reply in answered if _weight(reply.content) != 0]
        if declined or failed:
            log(
                INFO,
                "aggregate_train: %d store(s) declined the round, %d failed",
                len(declined),
                len(failed),
            )
        # Replies arrive in whatever order the stores finish; averaging them in a fixed order
        # makes the float sums, and so a run, reproducible.
        counted.sort(key=_arrival_free_order)
        arrays, metrics = self.inner.aggregate_train(server_round, counted)
        metrics = metrics if metrics is not None else MetricRecord()
        metrics["stores-asked"] = self._asked
        metrics["stores-trained"] = len(counted)
        metrics["stores-declined"] = len(declined)
        metrics["stores-failed"] = len(failed) + max(0, self._asked - len(replies))
        metrics["round-seconds"] = time.monotonic() - self._round_started
        return arrays, metrics

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
        metrics = next(iter(record.metric_records.values()))
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


def _weight(content: RecordDict) -> float | None:
    """The reply's ``num-examples``, or None when it has none (FedAvg then rejects it)."""
    for metrics in content.metric_records.values():
        value = metrics.get(WEIGHT_KEY)
        if isinstance(value, int | float):
            return float(value)
    return None


def _number(metrics: MetricRecord, key: str) -> float:
    value = metrics.get(key, 0.0)
    return float(value) if isinstance(value, int | float) else 0.0
