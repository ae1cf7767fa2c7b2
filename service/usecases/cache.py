"""The in-process cache of user state, with memoised entitlement decisions.

A cachetools LRU bounded by entries; each entry carries its own freshness deadline (a
TTLCache lookup costs five to ten times an LRUCache's: its timer and expiry bookkeeping are
pure Python; `make bench-micro` measures this cache's lookup, benchmarks/micro).
Writes made through other processes reach the cache through the change feed
(service.usecases.freshness calls `drop` and `expire_all`); cached *state* is kept at
most `ttl_seconds` all the same, a safety net for a change the feed could not deliver.
Memoised decisions are reused only while `now < valid_until`, so a decision is never
served past the time it could change by itself.

A store read that began before a user's entry was dropped may end after it: its state
is returned to its callers but not cached (`put(..., loaded_since=...)`), so a dropped
entry never comes back from a read older than the change that dropped it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
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
    # Entries dropped because the user's state changed (a write here or in the feed).
    invalidations: int = 0
    # Times every entry was expired at once (the change feed was lost or had a gap).
    expirations: int = 0


class _CountingLRU(LRUCache[str, CachedUser]):
    """An LRUCache that counts the entries it evicts."""

    def __init__(self, maxsize: int, stats: CacheStats) -> None:
        super().__init__(maxsize=maxsize)
        self._stats = stats

    def popitem(self) -> tuple[str, CachedUser]:
        item = super().popitem()
        self._stats.evictions += 1
        return item


# How long a drop is remembered against reads that began before it: longer than any
# store read may take (the store budget is under a second).
DROP_MEMORY_SECONDS = 30.0
# The most drops remembered at once; past it, reads that began before the oldest
# forgotten drop are not cached (never wrong, only a miss more).
DROP_MEMORY_ENTRIES = 100_000


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
        # Entries stored before this time (monotonic) are expired (expire_all).
        self._expired_before = float("-inf")
        # When each user's entry was last dropped, oldest first, for DROP_MEMORY_SECONDS;
        # and the newest drop time forgotten before that (see put).
        self._drops: OrderedDict[str, float] = OrderedDict()
        self._forgotten_drop = float("-inf")

    def get(self, user_id: str, min_version: int = 0) -> CachedUser | None:
        """The fresh entry for the user holding at least `min_version`, or None."""
        with self._lock:
            entry = self._entries.get(user_id)
            if (
                entry is None
                or entry.fresh_until <= self._monotonic()
                or entry.state.account.version < min_version
                or entry.fresh_until - self._ttl <= self._expired_before
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

    def put(self, state: UserState, loaded_since: float | None = None) -> CachedUser:
        """Caches `state` and returns its entry. `loaded_since` is when the store read
        that returned it began (monotonic): if the user's entry was dropped (or all were
        expired) since, the state may predate that change, so it is returned uncached."""
        entry = CachedUser(state, self._monotonic() + self._ttl)
        if self._ttl <= 0:
            return entry
        user_id = state.account.user_id
        with self._lock:
            if loaded_since is not None and loaded_since <= self._changed_at(user_id):
                return entry
            current = self._entries.get(user_id)
            # A slower concurrent load must not replace a newer state.
            if current is not None and current.state.account.version > state.account.version:
                return entry
            self._entries[user_id] = entry
        return entry

    def invalidate(self, user_id: str) -> None:
        """Drops the user's entry: their state changed (a write through this process)."""
        self.drop(user_id, None)

    def drop(self, user_id: str, version: int | None) -> bool:
        """Drops the user's entry unless it already holds `version` or newer (None: drop
        whatever it holds); reads that began before now are not cached for the user.
        Returns whether an entry was dropped."""
        with self._lock:
            entry = self._entries.get(user_id)
            if entry is not None and version is not None and entry.state.account.version >= version:
                return False  # up to date (a read after the write got here first)
            # Remembered even without an entry: a read of the user may be under way.
            self._remember_drop(user_id, self._monotonic())
            if entry is None:
                return False
            del self._entries[user_id]
            self.stats.invalidations += 1
            return True

    def expire_all(self) -> None:
        """Expires every entry: none is served fresh again (stale-if-error still may serve
        them), and reads that began before now are not cached."""
        with self._lock:
            self._expired_before = self._monotonic()
            self.stats.expirations += 1

    def changed_at(self, user_id: str) -> float:
        """When (monotonic) the user's entry was last dropped or all entries expired, as
        far as remembered (-inf: not recently). A read that must see that change may not
        share a store read begun before it."""
        with self._lock:
            return self._changed_at(user_id)

    def _changed_at(self, user_id: str) -> float:
        dropped = self._drops.get(user_id, self._forgotten_drop)
        return max(dropped, self._expired_before)

    def _remember_drop(self, user_id: str, now: float) -> None:
        drops = self._drops
        drops[user_id] = now
        drops.move_to_end(user_id)
        horizon = now - DROP_MEMORY_SECONDS
        while drops:
            oldest_user, oldest = next(iter(drops.items()))
            if oldest > horizon and len(drops) <= DROP_MEMORY_ENTRIES:
                break
            del drops[oldest_user]
            if oldest > horizon:  # forgotten for room, not age: remembered as a bound
                self._forgotten_drop = max(self._forgotten_drop, oldest)

    def __len__(self) -> int:
        return len(self._entries)
