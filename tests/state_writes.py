"""Test setup: putting a state into a store through its one write path, and the demo
users through the write use cases.

The repository has no raw "store this state" call (every write of the service is an
idempotent `apply`); tests that need a user in a given state before they start write it
with `write_state`, which is `apply` under a fresh request id: the state is stored at the
next version, with no history and a kept request nobody replays.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from service.catalog import load_catalog
from service.cli.store_commands import write_demo
from service.domain.account import AccountState
from storage.repository import AccountRepository, IdempotencyKey, Mutation

# A pure function from the current state to the desired one (it may run more than once:
# a retried transaction).
AccountChange = Callable[[AccountState], AccountState]

KIND = "test_state"


def write_state(repository: AccountRepository, user_id: str, change: AccountChange) -> AccountState:
    """Stores `change(current)` for `user_id` (its user id and version are ignored) at
    version + 1 in one transaction, and returns what was stored. Whatever `change` raises
    propagates and writes nothing."""
    key = IdempotencyKey(KIND, uuid.uuid4().hex, KIND)

    def mutate(current: AccountState) -> Mutation:
        return Mutation(change(current), {})

    return repository.apply(user_id, key, mutate, datetime.now(UTC)).state


def seed_demo_users(repository: AccountRepository, now: datetime) -> list[str]:
    """The demo users (service.catalog.demo) written into `repository` as `seed-demo`
    writes them: through the write use cases, with their clock at `now`."""
    return write_demo(repository, load_catalog(), now)
