"""MemoryRepository: the AccountRepository in a dictionary of this process."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from service.domain.account import AccountState, Household, UserState
from storage.apply import AppliesWrites, IdempotentWrite, KeptRequest, Replay
from storage.feed import BATCH_LIMIT, Change, ChangeBatch
from storage.repository import (
    Applied,
    HistoryEntry,
    IdempotencyKey,
    household_membership,
)

# How many of the newest changes the feed keeps (as the SQLite backend).
FEED_RETAINED = 100_000


class MemoryRepository(AppliesWrites):
    def __init__(self) -> None:
        self._accounts: dict[str, AccountState] = {}
        # (user_id, kind, id) -> what apply keeps of the request
        self._requests: dict[tuple[str, str, str], Replay] = {}
        self._history: dict[str, list[HistoryEntry]] = {}
        # The change feed: the newest changes, the first of them numbered _first_change
        # (positions count changes from 1, like the SQLite backend's seqs).
        self._changes: list[Change] = []
        self._first_change = 1
        self._lock = threading.Lock()

    def load(self, user_id: str, *, min_version: int = 0, stale_ok: bool = False) -> UserState:
        with self._lock:
            account = self._accounts.get(user_id) or AccountState.new(user_id)
            return UserState(account, self._household(account))

    def _household(self, account: AccountState) -> Household | None:
        membership = household_membership(account)
        if membership is None:
            return None
        manager = self._accounts.get(membership.manager_user_id)
        return Household(
            membership.household_id,
            membership.manager_user_id,
            manager.subscriptions if manager is not None else (),
            manager.version if manager is not None else 0,
        )

    def _run_write(self, write: IdempotentWrite) -> Applied:
        with self._lock:
            # A write that raises has changed nothing: every write of _MemoryWrite comes
            # after `mutate`, and none of them raises.
            return write.run(_MemoryWrite(self))

    def history(self, user_id: str) -> list[HistoryEntry]:
        with self._lock:
            return list(self._history.get(user_id, ()))

    def _publish(self, changes: Sequence[Change]) -> None:
        self._changes.extend(changes)
        excess = len(self._changes) - FEED_RETAINED
        if excess > 0:
            del self._changes[:excess]
            self._first_change += excess

    def feed_position(self) -> str:
        with self._lock:
            return str(self._first_change + len(self._changes) - 1)

    def read_changes(self, after: str, limit: int = BATCH_LIMIT) -> ChangeBatch:
        with self._lock:
            last = self._first_change + len(self._changes) - 1
            position = int(after)
            if position > last:  # the store was emptied (close)
                return ChangeBatch((), str(last), gap=True)
            start = max(position + 1 - self._first_change, 0)
            changes = tuple(self._changes[start : start + limit])
            gap = position + 1 < self._first_change
            return ChangeBatch(changes, str(start + self._first_change + len(changes) - 1), gap)

    def check(self) -> None:
        return None

    def close(self) -> None:
        with self._lock:
            self._accounts.clear()
            self._requests.clear()
            self._history.clear()
            self._first_change += len(self._changes)
            self._changes.clear()


class _MemoryWrite:
    """The WriteTransaction of MemoryRepository.apply: the repository's dictionaries,
    under its lock (held by the caller)."""

    def __init__(self, repository: MemoryRepository) -> None:
        self._repository = repository

    def read(self, user_id: str, key: IdempotencyKey) -> tuple[AccountState, Replay | None]:
        repository = self._repository
        current = repository._accounts.get(user_id) or AccountState.new(user_id)
        return current, repository._requests.get((user_id, key.kind, key.id))

    def write_account(self, current: AccountState, stored: AccountState) -> None:
        self._repository._accounts[stored.user_id] = stored

    def publish(self, user_id: str, changes: Sequence[Change]) -> None:
        self._repository._publish(changes)

    def keep_request(self, user_id: str, request: KeptRequest) -> None:
        key = request.key
        self._repository._requests[(user_id, key.kind, key.id)] = request.replay()

    def append_history(self, user_id: str, entries: Sequence[HistoryEntry]) -> None:
        self._repository._history.setdefault(user_id, []).extend(entries)
