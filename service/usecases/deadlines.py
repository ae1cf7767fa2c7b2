"""The budget of the RPC being served, and the share of it a store call may use.

The request guard sets the RPC's deadline (the caller's, capped by the server's
max_rpc_seconds, or that cap when the caller set none). A store call gets
min(store_timeout, what is left minus a reserve), so that when the store is slow there is
still time to answer from stale cache or to fail fast with UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from storage.deadline import ContextDeadline, DeadlineExceeded, deadline_in

# Time kept back from the store for building the answer (or the fallback).
ANSWER_RESERVE_SECONDS = 0.02

# The RPC's own deadline, set by the gRPC layer around the use case.
_rpc_deadline = ContextDeadline("rpc_deadline")
rpc_deadline_in = _rpc_deadline.within
rpc_remaining = _rpc_deadline.remaining


@dataclass(frozen=True, slots=True)
class StoreBudget:
    seconds: float
    # True when the RPC's deadline, not the store timeout, bounds the store call: if the
    # call runs out of time, so does the RPC (DEADLINE_EXCEEDED, not UNAVAILABLE).
    bound_by_rpc: bool


@contextmanager
def store_budget(store_timeout: float) -> Iterator[StoreBudget]:
    """Store calls inside get the store's share of the RPC budget; raises
    DeadlineExceeded when the RPC has no time left for a store call at all."""
    left = rpc_remaining()
    if left is None or left - ANSWER_RESERVE_SECONDS >= store_timeout:
        budget = StoreBudget(store_timeout, bound_by_rpc=False)
    else:
        budget = StoreBudget(left - ANSWER_RESERVE_SECONDS, bound_by_rpc=True)
    if budget.seconds <= 0:
        raise DeadlineExceeded("no time left in the RPC for a store call")
    with deadline_in(budget.seconds):
        yield budget
