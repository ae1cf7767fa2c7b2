"""The in-process cache of user state, with memoised entitlement decisions.

A cachetools LRU bounded by entries; each entry carries its own freshness deadline
(LRUCache lookups cost ~0.3 us against ~2-3 us for TTLCache, see shared/NOTES.md).
Cached *state* is kept at most `ttl_seconds`: that bounds how long a write made through
another process can go unseen by a read without a consistency token. Memoised decisions
are reused only while `now < valid_until`, so a decision is never served past the time
it could change by itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import LRUCache

from service.domain.account import UserState
from service.domain.decisions import EntitlementDecision, OfferDecisions
from service.domain.rules import Platform


@dataclass(slots=True)
class CachedUser:
    state: UserState
    fresh_until: float
    # Memoised entitlement decisions by feature id, and offer answers by (market,
    # platform), each reused while now < its valid_until. Created on first use: most
    # cached users never have offers asked for, and an empty dict is 64 bytes.
    decisions: dict[str, EntitlementDecision] | None = None
    offers: dict[tuple[str, Platform], OfferDecisions] | None = None
    # True when served past its freshness because the store failed (stale-if-error).
    stale: bool = False

    def decision(self, feature_id: str) -> EntitlementDecision | None:
        return None if self.decisions is None else self.decisions.get(feature_id)

    def remember_decision(self, feature_id: str, decision: EntitlementDecision) -> None:
        if self.decisions is None:
            self.decisions = {}
        self.decisions[feature_id] = decision

    def offer_answer(self, key: tuple[str, Platform]) -> OfferDecisions | None:
        return None if self.offers is None else self.offers.get(key)

    def remember_offers(self, key: tuple[str, Platform], answer: OfferDecisions) -> None:
        if self.offers is None:
            self.offers = {}
        self.offers[key] = answer


@dataclass(slots=True)
class CacheStats:
    """Counts since the cache was made (plain integers: the transport layer exports them
    as metrics by reading them now and then, so the hit path pays no metrics call)."""

    hits: int = 0
    misses: int = 0
    stale_served: int = 0
    # Entries dropped to make room for others (least recently used first).
    evictions: int = 0


class _CountingLRU(LRUCache[str, CachedUser]):
    """An LRUCache that counts the entries it evicts."""

    def __init__(self, maxsize: int, stats: CacheStats) -> None:
        super().__init__(maxsize=maxsize)
        self._stats = stats

    def popitem(self) -> tuple[str, CachedUser]:
        item = super().popitem()
        self._stats.evictions += 1
        return item


class UserStateCache:
    def __init__(
        self,
        max_entries: int,
        ttl_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats = CacheStats()
        self._entries: LRUCache[str, CachedUser] = _CountingLRU(max_entries, self.stats)
        self._ttl = ttl_seconds
        self._monotonic = monotonic
        # LRUCache reorders on every read, so reads need the lock too.
        self._lock = threading.Lock()

    def get(self, user_id: str, min_version: int = 0) -> CachedUser | None:
        """The fresh entry for the user holding at least `min_version`, or None."""
        with self._lock:
            entry = self._entries.get(user_id)
            if (
                entry is None
                or entry.fresh_until <= self._monotonic()
                or entry.state.account.version < min_version
            ):
                self.stats.misses += 1
                return None
            self.stats.hits += 1
            return entry

    def get_stale(self, user_id: str, min_version: int, max_staleness: float) -> CachedUser | None:
        """For stale-if-error: the entry even past its freshness, if it is no more than
        `max_staleness` seconds past it and holds at least `min_version`. The returned
        copy is marked stale and shares the memoised answers the entry has."""
        with self._lock:
            entry = self._entries.get(user_id)
            if (
                entry is None
                or entry.fresh_until + max_staleness <= self._monotonic()
                or entry.state.account.version < min_version
            ):
                return None
            self.stats.stale_served += 1
            return CachedUser(
                entry.state, entry.fresh_until, entry.decisions, entry.offers, stale=True
            )

    def put(self, state: UserState) -> CachedUser:
        entry = CachedUser(state, self._monotonic() + self._ttl)
        if self._ttl <= 0:
            return entry
        with self._lock:
            current = self._entries.get(state.account.user_id)
            # A slower concurrent load must not replace a newer state.
            if current is not None and current.state.account.version > state.account.version:
                return entry
            self._entries[state.account.user_id] = entry
        return entry

    def invalidate(self, user_id: str) -> None:
        with self._lock:
            self._entries.pop(user_id, None)

    def __len__(self) -> int:
        return len(self._entries)
