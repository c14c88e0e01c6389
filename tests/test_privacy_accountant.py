"""The Rényi-DP accountant of private runs: known values, monotonicity, refusals."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from coordinator.errors import CoordinatorError
from coordinator.privacy_accountant import (
    ORDERS,
    PrivacyAccountingError,
    gaussian_rdp,
    privacy_spent,
    rdp_to_epsilon,
)
from loyalnet.errors import LoyalnetError


def test_two_rounds_at_sigma_one_match_the_published_accountants() -> None:
    # An RDP accountant used with Flower gave 7.08 here (shared/FLOWER.md).
    spent = privacy_spent(2, 1.0, 1e-5)
    assert 7.07 <= spent.epsilon <= 7.09
    assert spent.delta == 1e-5 and spent.rounds == 2
    assert spent.order is not None and 3 < spent.order < 6


def test_one_round_is_a_single_gaussian_mechanism() -> None:
    spent = privacy_spent(1, 1.0, 1e-5)
    assert spent.epsilon == pytest.approx(4.7285, abs=1e-3)
    assert spent.order is not None
    # The reported epsilon is the conversion at the order it names.
    assert spent.epsilon == rdp_to_epsilon(gaussian_rdp(1.0, spent.order), spent.order, 1e-5)


def test_no_round_costs_nothing() -> None:
    assert privacy_spent(0, 1.0, 1e-5).epsilon == 0.0


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 5.0])
def test_epsilon_grows_with_rounds(sigma: float) -> None:
    epsilons = [privacy_spent(rounds, sigma, 1e-5).epsilon for rounds in range(0, 21)]
    assert all(later > earlier for earlier, later in itertools.pairwise(epsilons))
    # ... but sublinearly: composition in RDP beats adding epsilons.
    assert epsilons[20] < 20 * epsilons[1]


@pytest.mark.parametrize("rounds", [1, 2, 10])
def test_epsilon_falls_with_noise_and_with_looser_delta(rounds: int) -> None:
    by_sigma = [privacy_spent(rounds, sigma, 1e-5).epsilon for sigma in (0.5, 0.8, 1, 2, 4, 10)]
    assert all(later < earlier for earlier, later in itertools.pairwise(by_sigma))
    by_delta = [privacy_spent(rounds, 1.0, delta).epsilon for delta in (1e-8, 1e-6, 1e-4, 1e-2)]
    assert all(later < earlier for earlier, later in itertools.pairwise(by_delta))


@pytest.mark.parametrize(("rounds", "sigma"), [(1, 0.3), (2, 1.0), (10, 1.0), (3, 5.0), (1, 50.0)])
def test_the_grid_finds_the_best_order(rounds: int, sigma: float) -> None:
    """Within 0.05% of the conversion minimised over a fine continuum of orders."""
    orders = np.exp(np.linspace(math.log(1.0001), math.log(1e5), 200_000))
    rdp = rounds * orders / (2 * sigma**2)
    continuum = (
        rdp + np.log((orders - 1) / orders) - (math.log(1e-5) + np.log(orders)) / (orders - 1)
    )
    exact = float(continuum.min())
    assert exact <= privacy_spent(rounds, sigma, 1e-5).epsilon <= exact * 1.0005


def test_the_conversion_is_tighter_than_mironovs() -> None:
    for order in ORDERS[::50]:
        rdp = gaussian_rdp(1.0, order) * 3
        assert rdp_to_epsilon(rdp, order, 1e-5) < rdp + math.log(1 / 1e-5) / (order - 1)


@pytest.mark.parametrize(
    ("rounds", "sigma", "delta"),
    [
        (1, 0.0, 1e-5),
        (1, -1.0, 1e-5),
        (1, math.nan, 1e-5),
        (1, 1.0, 0.0),
        (1, 1.0, 1.0),
        (-1, 1.0, 1e-5),
    ],
)
def test_refuses_what_it_cannot_account_for(rounds: int, sigma: float, delta: float) -> None:
    with pytest.raises(PrivacyAccountingError):
        privacy_spent(rounds, sigma, delta)
    assert issubclass(PrivacyAccountingError, CoordinatorError)
    assert issubclass(PrivacyAccountingError, LoyalnetError)
