"""In-memory backend: for unit tests and as a benchmark baseline."""

from __future__ import annotations

import dataclasses
import threading

from service.domain.account import AccountState, Household, HouseholdRole, UserState
from storage.repository import AccountChange


class MemoryRepository:
    def __init__(self) -> None:
        self._accounts: dict[str, AccountState] = {}
        self._lock = threading.Lock()

    def load(self, user_id: str) -> UserState:
        with self._lock:
            account = self._accounts.get(user_id) or AccountState.new(user_id)
            return UserState(account, self._household(account))

    def _household(self, account: AccountState) -> Household | None:
        for membership in account.memberships:
            if membership.role is HouseholdRole.MEMBER and membership.left_at is None:
                manager = self._accounts.get(membership.manager_user_id)
                return Household(
                    membership.household_id,
                    membership.manager_user_id,
                    manager.subscriptions if manager is not None else (),
                )
        return None

    def update(self, user_id: str, change: AccountChange) -> AccountState:
        with self._lock:
            current = self._accounts.get(user_id) or AccountState.new(user_id)
            desired = change(current)
            stored = dataclasses.replace(desired, user_id=user_id, version=current.version + 1)
            self._accounts[user_id] = stored
            return stored

    def check(self) -> None:
        return None

    def close(self) -> None:
        with self._lock:
            self._accounts.clear()
