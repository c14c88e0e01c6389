"""The FedProx proximal term: keeps a store's local model near the global one it started from.

Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020. Each store minimises

    h(w) = F_local(w) + (mu / 2) * ||w - w_global||^2

instead of F_local alone, where w are the backbone's parameters and w_global the values the
round started from. With mu = 0 this is FedAvg's local objective. A store whose members differ
much from the chain's (non-IID data, the rule here: every store has its own people) or that runs
many local steps drifts less, so averaging its update with the others does less harm. Only the
parameters that are sent take part: the class rows are the store's own and have no global value.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def parameter_anchor(network: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of ``network``'s parameters by name: w_global at the start of a round."""
    return {name: value.detach().clone() for name, value in network.named_parameters()}


def proximal_term(
    network: nn.Module, anchor: Mapping[str, torch.Tensor], mu: float
) -> torch.Tensor:
    """(mu / 2) * sum over parameters of ||w - w_anchor||^2, a differentiable scalar (0 if mu = 0).

    Args:
        network: the model being trained.
        anchor: ``parameter_anchor`` of the same network taken when the round began.
        mu: the FedProx coefficient, >= 0.
    """
    total = torch.zeros(())
    if mu == 0.0:
        return total
    for name, value in network.named_parameters():
        total = total + (value - anchor[name]).pow(2).sum()
    return 0.5 * mu * total
