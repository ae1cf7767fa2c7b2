"""The time a call may take, in two nested deadlines held in context variables (set for
a block, read anywhere inside it: the same task or thread, or a context copied from it,
as every store thread's is):

- the RPC deadline, set by the transport around a call (the caller's, capped by the
  server's max_rpc_seconds, or that cap when the caller set none): `within_rpc_deadline`,
  read with `rpc_seconds_left`;
- the store deadline, set around each store call: `store_budget` gives a store call
  min(store timeout, what the RPC has left minus ANSWER_RESERVE_SECONDS), so that when
  the store is slow there is still time to answer from stale cache or to fail fast as
  unavailable; background loops (readiness, the change feed) set it alone with
  `within_store_deadline`. Backends read
  `store_seconds_left` and pass it to the database call (Spanner timeouts, SQLite's
  lock wait), so that a store call never outlives its RPC.

A context variable rather than a parameter: every repository method gets the budget
without each signature carrying it. Here, not in the use cases, because storage reads it
and storage imports only the domain.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from service.domain.errors import DeadlineExceeded

# Time kept back from a store call for building the answer (or the fallback).
ANSWER_RESERVE_SECONDS = 0.02


class ContextDeadline:
    """A deadline held in a context variable (None: no deadline)."""

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

    def seconds_left(self) -> float | None:
        """Seconds left (zero or negative once passed), or None without a deadline."""
        deadline = self._deadline.get()
        return None if deadline is None else deadline - time.monotonic()


_rpc = ContextDeadline("rpc_deadline")
_store = ContextDeadline("store_deadline")

within_rpc_deadline = _rpc.within
within_store_deadline = _store.within


def rpc_seconds_left() -> float | None:
    """Seconds left of the RPC being served (zero or negative once passed), or None
    outside an RPC. Never raises: the caller decides what a spent budget means."""
    return _rpc.seconds_left()


def store_seconds_left() -> float | None:
    """Seconds left for the current store call, or None when it has no deadline. Raises
    DeadlineExceeded when none is left, so that no store call starts that cannot finish."""
    left = _store.seconds_left()
    if left is not None and left <= 0:
        raise DeadlineExceeded("the RPC deadline passed before the store call")
    return left


@dataclass(frozen=True, slots=True)
class StoreBudget:
    # None: no deadline at all (no RPC deadline and no store timeout).
    seconds: float | None
    # True when the RPC's deadline, not the store timeout, bounds the store call: if the
    # call runs out of time, so does the RPC (DEADLINE_EXCEEDED, not unavailable).
    bound_by_rpc: bool


@contextmanager
def store_budget(store_timeout: float | None) -> Iterator[StoreBudget]:
    """Store calls inside get the store's share of the RPC's time: min(store_timeout,
    what is left minus ANSWER_RESERVE_SECONDS); None: what is left alone. Raises
    DeadlineExceeded when the RPC has no time left for a store call at all."""
    left = rpc_seconds_left()
    store_share = None if left is None else left - ANSWER_RESERVE_SECONDS
    if store_share is None or (store_timeout is not None and store_share >= store_timeout):
        budget = StoreBudget(store_timeout, bound_by_rpc=False)
    else:
        budget = StoreBudget(store_share, bound_by_rpc=True)
    if budget.seconds is not None and budget.seconds <= 0:
        raise DeadlineExceeded("no time left in the RPC for a store call")
    with within_store_deadline(budget.seconds):
        yield budget
