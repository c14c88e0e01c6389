"""The store's SuperNode picks up a training round's message promptly while a run is going on.

Flower 1.42's SuperNode asks the SuperLink for a message and, when there is none, sleeps 3 s
(hard-coded in ``flwr.supernode.start_client_internal``); its SuperExec then asks the SuperNode
for a task every second before it starts ``flwr-clientapp``. Each round therefore starts on
average 2 s, and at worst 4 s, after the coordinator sent it: a tenth of a demo round.

Two changes, both for the store's own process only:

- **Between the rounds of a run** (for ``active_seconds`` after the store answered a message)
  the SuperNode asks again every ``poll_seconds`` (0.5 s) instead of sleeping 3 s. When the
  store has had no message for that long it is back at Flower's pace, so an idle store of a
  large chain costs the SuperLink what it did. A thousand stores in a run ask at most 2,000
  times a second for those minutes; a chain that minds can raise ``poll_seconds``.
- **The SuperExec** (a child of the SuperNode, asking on the store's own machine) asks every
  0.1 s, through Flower's own ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``, unless the store set it.

Like the bundle check (``store_node.app_guard``), the first change wraps
``_pull_and_store_message``; :func:`install_prompt_pickup` checks it is there and used.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

from loyalnet.errors import LoyalnetError

POLL_SECONDS = 0.5
ACTIVE_SECONDS = 180.0
"""Longer than a round's local training plus the wait for the slowest store, in the demo and
the simulations' settings; a longer round costs one 3-s sleep, as before."""
SUPEREXEC_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
SUPEREXEC_POLL_SECONDS = "0.1"
_PICKUP_ATTRIBUTE = "__loyalnet_prompt_pickup__"

PullAndStore = Callable[..., int | None]


class PromptPickupError(LoyalnetError):
    """The installed Flower SuperNode does not poll the way this module expects."""


def prompt_pickup(
    pull_and_store: PullAndStore,
    poll_seconds: float = POLL_SECONDS,
    active_seconds: float = ACTIVE_SECONDS,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> PullAndStore:
    """Wrap Flower's ``_pull_and_store_message`` to keep asking while a run is active.

    The wrapper returns what ``pull_and_store`` returns (a run id when a message was stored,
    None when there was none). After a message, an empty answer is retried every
    ``poll_seconds`` for up to ``active_seconds``; then None goes back to Flower, which
    sleeps its 3 s, and so on until the next message.
    """
    if poll_seconds <= 0 or active_seconds < 0:
        raise ValueError(
            f"poll_seconds must be positive and active_seconds not negative, not "
            f"{poll_seconds} and {active_seconds}"
        )
    expecting = False
    deadline: float | None = None

    @functools.wraps(pull_and_store)
    def pull_promptly(*args: Any, **kwargs: Any) -> int | None:
        nonlocal expecting, deadline
        while True:
            run_id = pull_and_store(*args, **kwargs)
            if run_id is not None:
                expecting, deadline = True, None
                return run_id
            if not expecting:
                return None
            now = clock()
            if deadline is None:
                deadline = now + active_seconds
            if now + poll_seconds > deadline:
                expecting, deadline = False, None
                return None
            sleep(poll_seconds)

    setattr(pull_promptly, _PICKUP_ATTRIBUTE, True)
    return pull_promptly


def install_prompt_pickup(poll_seconds: float = POLL_SECONDS) -> None:
    """Make this process's Flower SuperNode and its SuperExec pick up messages promptly.

    Idempotent. Call before Flower starts (``loyalnet-supernode`` does).

    Raises:
        PromptPickupError: the installed Flower lacks the function wrapped, or no longer calls
            it from its loop.
    """
    from flwr.supernode import start_client_internal as flower

    os.environ.setdefault(SUPEREXEC_POLL_ENV, SUPEREXEC_POLL_SECONDS)
    pull_and_store = getattr(flower, "_pull_and_store_message", None)
    if getattr(pull_and_store, _PICKUP_ATTRIBUTE, False):
        return
    if pull_and_store is None or "_pull_and_store_message" not in (
        flower.start_client_internal.__code__.co_names
    ):
        raise PromptPickupError(
            "the installed Flower SuperNode does not fetch messages the way loyalnet expects "
            "(written for flwr 1.42.0); install the flwr version loyalnet pins "
            "(`pip install -e .` in the store's environment)."
        )
    flower._pull_and_store_message = prompt_pickup(pull_and_store, poll_seconds)
