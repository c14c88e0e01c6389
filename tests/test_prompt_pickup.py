"""The store's SuperNode asks again promptly between a run's rounds, and at Flower's pace idle.

The SuperNode loop itself runs in every federated test (``loyalnet-supernode``); here the
wrapper's schedule is checked against a scripted SuperLink and a fake clock.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from flwr.supernode import start_client_internal as flower

from store_node import prompt_pickup as pickup


class ScriptedLink:
    """``_pull_and_store_message`` answering from a script: a run id, or None for no message."""

    def __init__(self, answers: list[int | None]) -> None:
        self.answers: Iterator[int | None] = iter(answers)
        self.calls = 0

    def __call__(self, **_: object) -> int | None:
        self.calls += 1
        return next(self.answers)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _wrapped(link: ScriptedLink, clock: Clock, active: float = 10.0) -> pickup.PullAndStore:
    return pickup.prompt_pickup(link, 0.5, active, clock=clock, sleep=clock.sleep)


def test_an_idle_store_asks_at_flowers_pace() -> None:
    link, clock = ScriptedLink([None, None]), Clock()
    pull = _wrapped(link, clock)
    assert pull() is None
    assert pull() is None
    assert link.calls == 2 and clock.slept == []  # Flower sleeps its 3 s between these


def test_after_a_message_the_next_round_is_picked_up_within_half_a_second() -> None:
    link, clock = ScriptedLink([7, None, None, None, 7]), Clock()
    pull = _wrapped(link, clock)
    assert pull() == 7
    assert pull() == 7  # three empty answers, each followed by 0.5 s, then the next round
    assert link.calls == 5
    assert clock.slept == [0.5, 0.5, 0.5]


def test_a_store_without_messages_for_the_active_window_goes_back_to_flowers_pace() -> None:
    link, clock = ScriptedLink([7] + [None] * 30), Clock()
    pull = _wrapped(link, clock, active=2.0)
    assert pull() == 7
    assert pull() is None
    assert clock.slept == [0.5] * 4  # 2 s of asking, then None to Flower's loop
    calls = link.calls
    assert pull() is None
    assert link.calls == calls + 1  # idle again: one ask per call


def test_bad_intervals_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        pickup.prompt_pickup(ScriptedLink([]), 0.0)


def test_installing_wraps_flowers_loop_once_and_keeps_a_store_set_superexec_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = flower._pull_and_store_message
    monkeypatch.setattr(flower, "_pull_and_store_message", original)
    monkeypatch.delenv(pickup.SUPEREXEC_POLL_ENV, raising=False)
    pickup.install_prompt_pickup()
    wrapped = flower._pull_and_store_message
    assert wrapped is not original and wrapped.__wrapped__ is original  # type: ignore[attr-defined]
    pickup.install_prompt_pickup()
    assert flower._pull_and_store_message is wrapped
    assert os.environ[pickup.SUPEREXEC_POLL_ENV] == pickup.SUPEREXEC_POLL_SECONDS
    monkeypatch.setenv(pickup.SUPEREXEC_POLL_ENV, "2.0")
    pickup.install_prompt_pickup()
    assert os.environ[pickup.SUPEREXEC_POLL_ENV] == "2.0"


def test_installing_refuses_a_flower_whose_loop_no_longer_calls_the_wrapped_function(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(flower, "_pull_and_store_message")
    with pytest.raises(pickup.PromptPickupError, match=r"flwr 1\.42\.0"):
        pickup.install_prompt_pickup()
