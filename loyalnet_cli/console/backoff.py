"""How long to wait before asking an unreachable coordinator again."""

from __future__ import annotations


class Backoff:
    """Delays that double from ``first`` up to ``cap`` seconds, back to ``first`` on success.

    A coordinator restarting is back within seconds, so the first retries come fast; one down
    for long is asked every ``cap`` seconds, which costs it nothing when it returns.
    """

    def __init__(self, first: float = 1.0, cap: float = 10.0) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"back-off needs 0 < first <= cap, got {first} and {cap}")
        self._first = first
        self._cap = cap
        self._next = first

    def next(self) -> float:
        """The delay before the next try; each call doubles the one after, up to the cap."""
        delay = self._next
        self._next = min(self._cap, self._next * 2)
        return delay

    def reset(self) -> None:
        """The coordinator answered: the next failure starts from the first delay again."""
        self._next = self._first
