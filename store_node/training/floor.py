"""The store's privacy floor applied to a round: whether the coordinator asks too much.

A training round's config (a Flower ConfigRecord) holds the run's local training settings in
kebab case (``coordinator.run_config.TRAINING_DEFAULTS``: ``local-epochs``, ``batch-size``,
``learning-rate``, ``weight-decay``, ``margin``, ``scale``, ``min-members``,
``freeze-batchnorm``, ``seed``), plus what Flower's strategies add: ``server-round`` (FedAvg),
``proximal-mu`` (FedProx) and ``clipping_norm`` (client-side DP clipping), and how the reply
is to be encoded (``update-encoding``, ``loyalnet.update_encoding``). The store compares
it with its own limits (``store.toml``'s ``[training]``, :class:`TrainingLimits`) before it
loads any training data, and declines a round that asks for more.

Fail closed:

- a key the store does not know is declined too, not ignored. It may be a setting a newer
  coordinator expects to be honoured (say, a number of local steps) and the store would train
  without it while the coordinator believes otherwise. Flower's FedAvg, FedProx and DP
  wrappers add only the three keys above; a store that declines for an unknown key needs a
  loyalnet matching the coordinator's.
- a round naming one setting twice (``learning-rate`` and ``learning_rate``, both of which
  ``TrainingConfig.from_run_config`` reads) is declined: which one applied would depend on the
  order of the keys.
- a round config the store cannot read (a wrong type, a value ``TrainingConfig`` refuses, a
  ``clipping_norm`` that is not a positive number) is declined as well: the store trains only
  on a request it fully understands and accepts.

The reason is for the store's log only; the coordinator learns nothing but that the store
declined (``store_node.client_app``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields

from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from loyalnet.update_encoding import UPDATE_ENCODING_KEY, UpdateEncodingError, encoding_named
from store_node.config import TRAINING_TABLE, TrainingLimits
from store_node.training.errors import TrainingError
from store_node.training.local import TrainingConfig

SERVER_ROUND_KEY = "server-round"
"""Round config key Flower's FedAvg sets to the round number (1, 2, ...)."""

ROUND_KEYS = frozenset(
    {f.name for f in fields(TrainingConfig)}
    | {
        SERVER_ROUND_KEY.replace("-", "_"),
        KEY_CLIPPING_NORM.replace("-", "_"),
        UPDATE_ENCODING_KEY.replace("-", "_"),
    }
)
"""Every round config key a store knows, with ``-`` spelt ``_`` (``from_run_config`` reads both)."""


def round_refusal(settings: Mapping[str, object], limits: TrainingLimits) -> str:
    """Why this store declines a round with config ``settings``; '' when it may train.

    Args:
        settings: the round's config record, as received.
        limits: the store's ``[training]`` limits.
    """
    spelt: dict[str, str] = {}
    for key in settings:
        name = key.replace("-", "_")
        if name not in ROUND_KEYS:
            return (
                f"the round config has {_shown(key)}, a setting this store does not know; update "
                "loyalnet on this store to match the coordinator's"
            )
        if name in spelt:
            return f"the round config names one setting twice ({spelt[name]!r} and {key!r})"
        spelt[name] = key
    try:
        config = TrainingConfig.from_run_config(settings)
        encoding = spelt.get(UPDATE_ENCODING_KEY.replace("-", "_"))
        if encoding is not None:
            encoding_named(settings[encoding])
    except (TrainingError, UpdateEncodingError) as err:
        return f"the round config is not valid ({_shown(str(err), 300)})"
    return _beyond_limits(config, settings.get(KEY_CLIPPING_NORM), limits)


def _beyond_limits(config: TrainingConfig, clipping: object, limits: TrainingLimits) -> str:
    """What in ``config`` (and its ``clipping_norm``) is outside ``limits``; '' if nothing."""
    where = f"this store's limit (store.toml [{TRAINING_TABLE}]"
    if config.min_members < limits.min_members:
        return (
            f"the round asks for min-members {config.min_members}, below {where} "
            f"min_members = {limits.min_members})"
        )
    if config.local_epochs > limits.max_local_epochs:
        return (
            f"the round asks for local-epochs {config.local_epochs}, above {where} "
            f"max_local_epochs = {limits.max_local_epochs})"
        )
    if not limits.min_learning_rate <= config.learning_rate <= limits.max_learning_rate:
        return (
            f"the round asks for learning-rate {config.learning_rate}, outside {where} "
            f"min_learning_rate = {limits.min_learning_rate}, max_learning_rate = "
            f"{limits.max_learning_rate})"
        )
    if limits.require_frozen_batchnorm and not config.freeze_batchnorm:
        return (
            "the round asks for live BatchNorm statistics (freeze-batchnorm false), and "
            f"{where} require_frozen_batchnorm = true) keeps them frozen"
        )
    if clipping is None:
        if limits.require_clipping:
            return (
                f"the round has no {KEY_CLIPPING_NORM} (no DP clipping), and {where} "
                "require_clipping = true) requires it"
            )
        return ""
    if isinstance(clipping, bool) or not isinstance(clipping, int | float):
        return f"the round's {KEY_CLIPPING_NORM} = {_shown(clipping)} is not a number"
    # An int is compared as it is: a huge one would overflow a float conversion.
    if (isinstance(clipping, float) and not math.isfinite(clipping)) or clipping <= 0:
        return f"the round's {KEY_CLIPPING_NORM} = {_shown(clipping)} is not a number > 0"
    if limits.max_clipping_norm is not None and clipping > limits.max_clipping_norm:
        return (
            f"the round asks for {KEY_CLIPPING_NORM} {_shown(clipping)}, above {where} "
            f"max_clipping_norm = {limits.max_clipping_norm})"
        )
    return ""


def _shown(value: object, limit: int = 60) -> str:
    """``value`` for the log, cut short: a round config may hold anything."""
    text = value if isinstance(value, str) and limit > 60 else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
