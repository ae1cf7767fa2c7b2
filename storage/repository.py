"""The repository interface every storage backend implements.

A backend loads a user's whole state (with their household) in one call, and applies a
change in one transaction that increments the user's version. The same contract test
suite (tests/contract) runs unchanged against every backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from service.domain.account import AccountState, UserState

# A pure function from the current state to the desired state. Backends may call it more
# than once (a retried transaction), so it must have no side effects.
AccountChange = Callable[[AccountState], AccountState]


class StoreError(Exception):
    """Base class of storage failures the service maps to gRPC statuses."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or did not answer in time; the caller may retry."""


class AccountRepository(Protocol):
    def load(self, user_id: str) -> UserState:
        """The user's state and, if they are an active household member, the household
        with the manager's subscriptions, read consistently in one call. A user the store
        has never seen is `AccountState.new(user_id)` (version 0)."""
        ...

    def update(self, user_id: str, change: AccountChange) -> AccountState:
        """Applies `change` to the user's current state in one transaction, stores the
        result with version = previous version + 1 and returns it. The `user_id` and
        `version` of the state returned by `change` are ignored. Exceptions raised by
        `change` abort the transaction and propagate unchanged."""
        ...

    def check(self) -> None:
        """Raises StoreUnavailable when the store cannot serve reads (readiness)."""
        ...

    def close(self) -> None:
        """Releases connections. The repository is unusable afterwards."""
        ...
