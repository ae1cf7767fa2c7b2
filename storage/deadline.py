"""The time budget of the RPC a store call serves.

The servicer layer sets the RPC's deadline (from the caller's deadline or the server's
cap) around the use case; backends read `remaining()` and pass it to the database call
(Spanner timeouts, SQLite's busy wait), so a store call never outlives its RPC.
A context variable rather than a parameter: every repository method gets the budget
without each signature carrying it.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "store_deadline", default=None
)


class DeadlineExceeded(Exception):
    """The RPC's budget ran out before (or while) the store was called."""


@contextmanager
def deadline_in(seconds: float | None) -> Iterator[None]:
    """Store calls inside get at most `seconds` from now (None: no deadline)."""
    token = _deadline.set(None if seconds is None else time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left for the current RPC, or None when it has no deadline. Raises
    DeadlineExceeded when none is left, so no store call starts that cannot finish."""
    deadline = _deadline.get()
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("the RPC deadline passed before the store call")
    return left
