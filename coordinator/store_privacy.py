"""A differentially private run: Flower's client-side fixed clipping, exact for our stores.

Papers: McMahan, Ramage, Talwar and Zhang, "Learning Differentially Private Recurrent Language
Models", ICLR 2018 (https://arxiv.org/abs/1710.06963), for DP-FedAvg with clipped updates and
Gaussian noise on their average; Geyer, Klein and Nabi, "Differentially Private Federated
Learning: A Client Level Perspective" (https://arxiv.org/abs/1712.07557).

A round, for the global backbone w_t and the m stores that train in it:

1. the coordinator sends w_t and the clipping norm C (Flower's wrapper puts C in the round's
   config as ``clipping_norm``);
2. store i trains w_i and sends w_t + d_i * min(1, C / ||d_i||), with d_i = w_i - w_t and
   ||.|| the L2 norm over the whole backbone (Flower's ``fixedclipping_mod``, applied by
   ``store_node.client_app``);
3. the coordinator releases ``w_{t+1} = w_t + (1/m) sum_i clip(d_i) + N(0, (sigma C / m)^2 I)``,
   which is ``w_t + (sum_i clip(d_i) + N(0, sigma^2 C^2 I)) / m``: the Gaussian mechanism
   with L2 sensitivity C (one store added or removed moves the sum by at most C) and noise
   multiplier sigma, then post-processing. Its privacy cost is accounted per round by
   :mod:`coordinator.privacy_accountant`, which states the unit of privacy (one store) and
   the assumptions.

:class:`StorePrivacy` is Flower's ``DifferentialPrivacyClientSideFixedClipping`` with what
makes step 3 hold here, where the stores that train vary from round to round:

- m is the number of stores whose updates are averaged this round. Flower fixes it
  (``num_sampled_clients``) when the strategy is built; with a fixed count, a round in which
  fewer stores trained would get less noise than sigma needs. :class:`StoreRounds
  <coordinator.strategy.StoreRounds>` hands this wrapper the trained stores' replies only:
  declined and failed stores are no part of m, the average or the noise.
- every trained store weighs the same. FedAvg's weighting by crops would give a large store
  more than 1/m of the average and so more than C/m of influence; here each reply gets the
  weight 1 under :data:`STORE_WEIGHT_KEY`, which the wrapped FedAvg averages by. The round
  metrics stay per crop (``coordinator.strategy.aggregate_round_metrics``).
- the BatchNorm running means and variances go back to the round's global values after the
  noise. A private run freezes them (``freeze-batchnorm``, checked by the run config), so
  every store returns them unchanged: they hold nothing about any store and need no noise,
  and noise would turn the pretrained backbone's near-zero variances negative, so its
  embeddings NaN.
- the coordinator clips each update longer than C again before averaging. A store clips its
  own (step 2), so this changes at most float32 rounding for it; but a store still running a
  ClientApp without the clipping mod would send its update unclipped, and the reported
  epsilon would be false for it. Such updates are counted in the ``dp-clipped-here`` metric.
- each round's metrics get ``epsilon`` (after all rounds so far that released a model),
  ``dp-delta`` and ``dp-noise-stddev`` (sigma C / m; 0 when nothing was released).
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO, WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg
from flwr.supercore.differential_privacy import compute_clip_model_update, get_norm

from coordinator.privacy_accountant import privacy_spent
from coordinator.store_influence import keep_statistics

STORE_WEIGHT_KEY = "dp-store-weight"
"""The weight every trained store's reply gets in a private round: 1. Never sent by a store."""
UNCLIPPED_TOLERANCE = 1.01
"""An update longer than this times C was not clipped by its store (float32 rounding of a
clipped one stays far below)."""


class StorePrivacy(DifferentialPrivacyClientSideFixedClipping):
    """Client-side fixed-clipping DP over the stores that trained; see the module docstring.

    Args:
        strategy: the FedAvg (or FedProx) that averages; its ``weighted_by_key`` is set to
            :data:`STORE_WEIGHT_KEY` here, so that every store weighs the same.
        noise_multiplier: sigma, > 0.
        clipping_norm: C, > 0.
        delta: the delta epsilon is reported at.
    """

    def __init__(
        self, strategy: FedAvg, noise_multiplier: float, clipping_norm: float, delta: float
    ) -> None:
        # num_sampled_clients is set each round to the stores averaged; 1 until then.
        super().__init__(strategy, noise_multiplier, clipping_norm, num_sampled_clients=1)
        strategy.weighted_by_key = STORE_WEIGHT_KEY
        self.delta = delta
        self.released_rounds = 0
        privacy_spent(1, noise_multiplier, delta)  # refuses values it cannot account for
        self._global = ArrayRecord()

    def summary(self) -> None:
        """Log the DP settings, then the wrapped strategy's."""
        log(INFO, "\t├──> DP epsilon reported at delta %g", self.delta)
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Flower's (the round's config gets ``clipping_norm``), keeping the global arrays."""
        self._global = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Average the trained stores' clipped updates equally and add the noise for them."""
        trained = list(replies)
        arrays: ArrayRecord | None = None
        metrics: MetricRecord | None = None
        stddev = 0.0
        clipped_here = 0
        if trained:
            for reply in trained:
                clipped_here += self._clip(reply)
                for record in reply.content.metric_records.values():
                    record[STORE_WEIGHT_KEY] = 1
            self.num_sampled_clients = len(trained)
            arrays, metrics = super().aggregate_train(server_round, trained)
        if arrays:
            self.released_rounds += 1
            stddev = self.noise_multiplier * self.clipping_norm / len(trained)
            arrays = keep_statistics(arrays, self._global)
        spent = privacy_spent(self.released_rounds, self.noise_multiplier, self.delta)
        metrics = metrics if metrics is not None else MetricRecord()
        metrics["epsilon"] = spent.epsilon
        metrics["dp-delta"] = spent.delta
        metrics["dp-noise-stddev"] = stddev
        metrics["dp-clipped-here"] = clipped_here
        log(
            INFO,
            "aggregate_train: privacy spent epsilon %.3f at delta %g after %d released round(s)",
            spent.epsilon,
            spent.delta,
            spent.rounds,
        )
        return arrays, metrics

    def _clip(self, reply: Message) -> bool:
        """Clip the reply's update to C in place; True when its store had not."""
        for name, record in reply.content.array_records.items():
            keys = list(record.keys())
            if set(keys) != set(self._global.keys()):
                continue  # FedAvg refuses it, as it would any inconsistent reply
            sent = [record[key].numpy() for key in keys]
            start = [self._global[key].numpy() for key in keys]
            norm = get_norm([update - origin for update, origin in zip(sent, start, strict=True)])
            if norm <= self.clipping_norm:
                continue  # nothing to clip (and Flower's clipping divides by the norm)
            compute_clip_model_update(sent, start, self.clipping_norm)
            reply.content[name] = ArrayRecord(
                {key: Array(np.asarray(value)) for key, value in zip(keys, sent, strict=True)}
            )
            if norm > UNCLIPPED_TOLERANCE * self.clipping_norm:
                log(
                    WARNING,
                    "aggregate_train: an update of L2 norm %.4g came unclipped (C = %.4g); "
                    "clipped here. Update loyalnet on the store that sent it.",
                    norm,
                    self.clipping_norm,
                )
                return True
        return False
