"""What a store answers to a training round; no torch, so the ClientApp can import it cheaply."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from loyalnet.errors import LoyalnetError

TRAINER_SOCKET_NAME = "trainer.sock"
"""The trainer's Unix socket in the store folder (``StorePaths.trainer_socket``)."""

PackedArrays = dict[str, npt.NDArray[np.float32]]
"""The backbone as ``loyalnet.packed_backbone`` packs it: three flat float32 arrays by name."""


class StoreRoundError(LoyalnetError):
    """The store could not take part in the round; the text is safe to send."""


@dataclass(frozen=True)
class RoundAnswer:
    """A store's answer to one round.

    Attributes:
        arrays: the trained backbone, packed; None when the store declined.
        declined: why the store declined (for its own log only); '' when it trained.
        refused: True when the round asked for more than the store's limits allow (logged as a
            warning), False when the store simply could not train (too few members).
        examples: crops trained on (FedAvg's weight); 0 when declined.
        members: consenting members with crops.
        loss_first_epoch, loss_last_epoch: mean CosFace loss per crop.
        seconds: wall time of the local training, reading the crops included.
        purged: members whose consent had lapsed and whose biometrics the store purged before
            the round (for the store's own log; never sent to the coordinator).
    """

    arrays: PackedArrays | None
    declined: str = ""
    refused: bool = False
    examples: int = 0
    members: int = 0
    loss_first_epoch: float = 0.0
    loss_last_epoch: float = 0.0
    seconds: float = 0.0
    purged: int = 0

    @classmethod
    def declining(cls, reason: str, *, refused: bool = False, purged: int = 0) -> RoundAnswer:
        """The answer of a store that does not train this round."""
        return cls(None, reason, refused, purged=purged)
