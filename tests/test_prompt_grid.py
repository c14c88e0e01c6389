"""``PromptGrid``: a round's replies are collected when they arrive, within Flower's contract.

The grid underneath is a stand-in for the SuperLink whose stores reply after set delays; the
real SuperLink path is exercised by every federated test that runs ``coordinator.server_app``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import cast

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from coordinator.prompt_grid import PromptGrid


class StoresReplyingAfter:
    """Push/pull of a SuperLink whose store ``i`` replies ``delays[i]`` s after the push."""

    def __init__(self, delays: Sequence[float | None]) -> None:
        self.delays = list(delays)
        self.due: dict[str, tuple[float, Message]] = {}
        self.pulls = 0

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        now = time.monotonic()
        for message, delay in zip(messages, self.delays, strict=True):
            # What the SuperLink does on a push: the message's id is its content's hash.
            message.metadata.__dict__["_message_id"] = message.object_id
            ids.append(message.metadata.message_id)
            if delay is not None:  # None: a store that never replies
                self.due[message.metadata.message_id] = (now + delay, message)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        self.pulls += 1
        now = time.monotonic()
        arrived = [mid for mid in message_ids if mid in self.due and self.due[mid][0] <= now]
        return [Message(RecordDict(), reply_to=self.due.pop(mid)[1]) for mid in arrived]


def _asks(count: int) -> list[Message]:
    return [
        Message(
            RecordDict({"config": ConfigRecord({"store": i})}),
            dst_node_id=i + 1,
            message_type="train",
        )
        for i in range(count)
    ]


def _grid(link: StoresReplyingAfter, poll_seconds: float) -> PromptGrid:
    return PromptGrid(cast(Grid, link), poll_seconds)


@pytest.mark.usefixtures("task_identity")
def test_the_round_ends_as_soon_as_the_last_store_replied() -> None:
    link = StoresReplyingAfter([0.2, 0.5, 0.9])
    asks = _asks(3)
    started = time.monotonic()
    replies = list(_grid(link, 0.05).send_and_receive(asks, timeout=30.0))
    waited = time.monotonic() - started
    assert sorted(r.metadata.reply_to_message_id for r in replies) == sorted(
        a.metadata.message_id for a in asks
    )
    # Flower's own grid asks every 3 s, so it would return at 3 s here.
    assert 0.9 <= waited < 1.5


@pytest.mark.usefixtures("task_identity")
def test_a_store_that_never_replies_is_left_out_at_the_timeout() -> None:
    link = StoresReplyingAfter([0.1, None, 0.3])
    asks = _asks(3)
    started = time.monotonic()
    replies = list(_grid(link, 0.05).send_and_receive(asks, timeout=1.0))
    waited = time.monotonic() - started
    assert {r.metadata.reply_to_message_id for r in replies} == {
        asks[0].metadata.message_id,
        asks[2].metadata.message_id,
    }
    assert 0.9 <= waited < 1.5


@pytest.mark.usefixtures("task_identity")
def test_without_a_timeout_it_waits_for_every_reply() -> None:
    link = StoresReplyingAfter([0.6, 0.1])
    replies = list(_grid(link, 0.05).send_and_receive(_asks(2), timeout=None))
    assert len(replies) == 2
    assert link.pulls >= 2


def test_the_poll_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        PromptGrid(cast(Grid, StoresReplyingAfter([])), 0.0)
