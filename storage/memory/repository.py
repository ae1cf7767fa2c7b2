"""MemoryRepository: the AccountRepository in a dictionary of this process."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from service.domain.account import AccountState, Household, UserState
from storage.feed import BATCH_LIMIT, Change, ChangeBatch, changes_of
from storage.repository import (
    AccountChange,
    AccountMutation,
    Applied,
    HistoryEntry,
    IdempotencyConflict,
    IdempotencyKey,
    household_membership,
)

# How many of the newest changes the feed keeps (as the SQLite backend).
FEED_RETAINED = 100_000


class MemoryRepository:
    def __init__(self) -> None:
        self._accounts: dict[str, AccountState] = {}
        # (user_id, kind, id) -> (fingerprint, response, version)
        self._requests: dict[tuple[str, str, str], tuple[str, Mapping[str, Any], int]] = {}
        self._history: dict[str, list[HistoryEntry]] = {}
        # The change feed: the newest changes, the first of them numbered _first_change
        # (positions count changes from 1, like the SQLite backend's seqs).
        self._changes: list[Change] = []
        self._first_change = 1
        self._lock = threading.Lock()

    def load(self, user_id: str, *, min_version: int = 0) -> UserState:
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

    def update(self, user_id: str, change: AccountChange) -> AccountState:
        with self._lock:
            current = self._accounts.get(user_id) or AccountState.new(user_id)
            desired = change(current)
            stored = dataclasses.replace(desired, user_id=user_id, version=current.version + 1)
            self._accounts[user_id] = stored
            self._publish(changes_of(current, stored))
            return stored

    def apply(
        self,
        user_id: str,
        key: IdempotencyKey,
        mutate: AccountMutation,
        recorded_at: datetime,
    ) -> Applied:
        with self._lock:
            current = self._accounts.get(user_id) or AccountState.new(user_id)
            seen = self._requests.get((user_id, key.kind, key.id))
            if seen is not None:
                fingerprint, response, version = seen
                if fingerprint != key.fingerprint:
                    raise IdempotencyConflict(f"{key.kind} id reused with another request")
                return Applied(current, version, response, replayed=True)
            mutation = mutate(current)
            # Stored as JSON, like the durable backends, so replays answer identically.
            response = json.loads(json.dumps(mutation.response, sort_keys=True))
            if mutation.state is None and current.version > 0:
                # No change: the key is kept at the current version, nothing else written.
                self._requests[(user_id, key.kind, key.id)] = (
                    key.fingerprint,
                    response,
                    current.version,
                )
                return Applied(current, current.version, response, replayed=False)
            # (A user never stored is stored unchanged as version 1, like the durable
            # backends, which need the user's row to keep the key with.)
            desired = current if mutation.state is None else mutation.state
            version = current.version + 1
            stored = dataclasses.replace(desired, user_id=user_id, version=version)
            self._accounts[user_id] = stored
            self._publish(changes_of(current, stored))
            self._requests[(user_id, key.kind, key.id)] = (
                key.fingerprint,
                response,
                version,
            )
            self._history.setdefault(user_id, []).extend(
                HistoryEntry(d.kind, d.reference, d.effective_at, recorded_at, version, d.summary)
                for d in mutation.history
            )
            return Applied(stored, version, response, replayed=False)

    def history(self, user_id: str) -> list[HistoryEntry]:
        with self._lock:
            return list(self._history.get(user_id, ()))

    def _publish(self, changes: list[Change]) -> None:
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
