"""The time budget of the RPC a store call serves.

The use-case layer sets the store call's deadline (from the RPC's deadline, capped by the
store timeout) around each store call; backends read `remaining()` and pass it to the
database call (Spanner timeouts, SQLite's busy wait), so a store call never outlives its
RPC. A context variable rather than a parameter: every repository method gets the budget
without each signature carrying it.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager


class DeadlineExceeded(Exception):
    """The RPC's budget ran out before (or while) the store was called."""


class ContextDeadline:
    """A deadline held in a context variable: set for a block, read anywhere inside it
    (in the same thread or task, or a context copied from it)."""

    def __init__(self, name: str) -> None:
        self._deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
            name, default=None
        )

    @contextmanager
    def within(self, seconds: float | None) -> Iterator[None]:
        """Inside the block the deadline is `seconds` from now (None: no deadline)."""
        token = self._deadline.set(None if seconds is None else time.monotonic() + seconds)
        try:
            yield
        finally:
            self._deadline.reset(token)

    def remaining(self) -> float | None:
        """Seconds left (negative once passed), or None without a deadline."""
        deadline = self._deadline.get()
        return None if deadline is None else deadline - time.monotonic()


_store_deadline = ContextDeadline("store_deadline")
deadline_in = _store_deadline.within


def remaining() -> float | None:
    """Seconds left for the current store call, or None when it has no deadline. Raises
    DeadlineExceeded when none is left, so no store call starts that cannot finish."""
    left = _store_deadline.remaining()
    if left is not None and left <= 0:
        raise DeadlineExceeded("the RPC deadline passed before the store call")
    return left
