"""Fault injection around a real repository, for drills, tests and benchmarks: the store
becomes slow (every call waits first) or fails (every call raises StoreUnavailable) while
the flags say so. The waits honour the RPC's store budget, as a real client's timeouts do:
a call that would outlive it waits out the budget and raises DeadlineExceeded."""

from __future__ import annotations

import threading
from datetime import datetime

from service.domain.account import UserState
from service.domain.deadlines import store_seconds_left
from service.domain.errors import DeadlineExceeded, StoreUnavailable
from storage.feed import BATCH_LIMIT, ChangeBatch, ChangeFeed
from storage.repository import (
    AccountMutation,
    AccountRepository,
    Applied,
    HistoryEntry,
    IdempotencyKey,
    check_store,
)


class FaultInjectingRepository:
    def __init__(self, inner: AccountRepository, delay_seconds: float = 0.0) -> None:
        self.inner = inner
        self.delay_seconds = delay_seconds
        self.failing = False
        self.calls = 0
        # Store calls running now (to show that none outlives its RPC).
        self.in_flight = 0
        self._lock = threading.Lock()
        # Set to wake sleeping calls when the test or drill changes its mind.
        self._wake = threading.Event()

    def _before(self) -> None:
        with self._lock:
            self.calls += 1
            self.in_flight += 1
        try:
            self._inject()
        finally:
            with self._lock:
                self.in_flight -= 1

    def _inject(self) -> None:
        if self.failing:
            raise StoreUnavailable("injected store failure")
        delay = self.delay_seconds
        if delay <= 0:
            return
        budget = store_seconds_left()
        if budget is not None and budget < delay:
            self._wake.wait(budget)
            raise DeadlineExceeded("injected store delay outlived the call's budget")
        self._wake.wait(delay)

    def load(self, user_id: str, *, min_version: int = 0, stale_ok: bool = False) -> UserState:
        self._before()
        return self.inner.load(user_id, min_version=min_version, stale_ok=stale_ok)

    def apply(
        self, user_id: str, key: IdempotencyKey, mutate: AccountMutation, recorded_at: datetime
    ) -> Applied:
        self._before()
        return self.inner.apply(user_id, key, mutate, recorded_at)

    def history(self, user_id: str) -> list[HistoryEntry]:
        self._before()
        return self.inner.history(user_id)

    # The change feed: faults and delays apply, but polls are not counted in `calls`
    # (tests count the store reads their RPCs cause).

    def feed_position(self) -> str:
        self._inject()
        return self._feed().feed_position()

    def read_changes(self, after: str, limit: int = BATCH_LIMIT) -> ChangeBatch:
        self._inject()
        return self._feed().read_changes(after, limit)

    def _feed(self) -> ChangeFeed:
        if not isinstance(self.inner, ChangeFeed):
            raise StoreUnavailable("the wrapped store has no change feed")
        return self.inner

    def check(self) -> None:
        if self.failing:
            raise StoreUnavailable("injected store failure")
        self.inner.check()

    def check_writable(self) -> None:
        """Readiness of the wrapped store, writes included where it can tell."""
        if self.failing:
            raise StoreUnavailable("injected store failure")
        check_store(self.inner, writable=True)

    def close(self) -> None:
        self.inner.close()
