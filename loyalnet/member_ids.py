"""Loyalty member ids: the one thing about a member the whole chain may name.

A store keys its gallery by the id; the coordinator knows a member only by it, when an
erasure names them. Both sides accept the same ids, so a request the coordinator takes is one
every store can carry out.
"""

from __future__ import annotations

MEMBER_ID_MAX_CHARS = 128


def member_id_problem(member_id: object) -> str | None:
    """Why ``member_id`` is not a usable member id (a sentence to show), or None if it is.

    Usable: a string of 1 to :data:`MEMBER_ID_MAX_CHARS` printable characters, without blanks
    at its ends.
    """
    if not isinstance(member_id, str) or not member_id:
        return "a member id must be a non-empty string; give the loyalty member id."
    if member_id != member_id.strip() or not member_id.isprintable():
        return (
            f"member id {member_id!r} has blanks at its ends or control characters; "
            "give the loyalty member id exactly as printed on the card."
        )
    if len(member_id) > MEMBER_ID_MAX_CHARS:
        return (
            f"member id is {len(member_id)} characters, more than {MEMBER_ID_MAX_CHARS}; "
            "give the loyalty member id, not free text."
        )
    return None
