"""The near cache: decisions kept in the caller's process, exact while the change stream
(EntitlementService.WatchChanges) is up.

- An LRU bounded by entries, keyed by the request (user, feature; user's list; user,
  market, platform for offers); an entry is never served at or past its decision's
  `valid_until` (by this machine's clock).
- The change stream drops every entry of a user who changed, and records the change's
  consistency token: the user's next reads carry it (or full consistency, for a change of
  derived state), so that no server process answers them from older state, however far
  behind its own cache is. A write through the client does the same with the write's token
  (read-your-writes). The requirement lasts `requirement_seconds` (every server process
  follows its feed well within it).
- An answer whose request started before an invalidation of its user (or a reset) is not
  cached: it may predate the change.
- Stream health: each message (changes or a heartbeat, about every second) marks the stream
  heard. Entries are served as exact while it was heard within `heartbeat_timeout`; after
  that, within `staleness_bound` of the last message, flagged stale; beyond it not at all
  (the read goes to the server, and its answer is not cached until the stream is back).
  Until the stream's first message nothing is served from the cache, so start-up never
  waits for the stream: reads simply go to the server.
- `reset` (the server cannot tell what changed) drops everything.

Thread-safe: the stream's thread invalidates while callers' threads read; a read takes
no lock (a dictionary get and an LRU touch), writers take one.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

# A read after a change carries the change's token for this long (every server process
# drops its cached state of the user within about a second of the change).
REQUIREMENT_SECONDS = 10.0
# Users whose last invalidation is remembered (for answers in flight); older ones are
# forgotten, and an answer that started before the newest forgotten one is not cached.
REMEMBERED_INVALIDATIONS = 100_000


class _Entry:
    __slots__ = ("expires", "key", "stale_value", "token", "user", "value")

    def __init__(self, key: Hashable, user: str, value: Any, expires: float, token: str) -> None:
        self.key = key
        self.user = user
        self.value = value
        self.stale_value: Any = None
        self.expires = expires
        self.token = token


@dataclass(slots=True)
class NearCacheStats:
    hits: int = 0
    # Served while the stream was down, within the staleness bound (flagged stale).
    stale_hits: int = 0
    misses: int = 0
    # Answers cached, and answers not cached (their user changed while they were in
    # flight, or the stream was down).
    stored: int = 0
    not_stored: int = 0
    # Users invalidated by the stream or by the client's writes; resets.
    invalidations: int = 0
    resets: int = 0
    evictions: int = 0


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a user's next read must carry: a token, or full consistency (token "")."""

    token: str
    until: float

    @property
    def full_consistency(self) -> bool:
        return not self.token


class NearCache:
    def __init__(
        self,
        max_entries: int = 100_000,
        *,
        staleness_bound: float = 5.0,
        heartbeat_timeout: float = 3.0,
        requirement_seconds: float = REQUIREMENT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.staleness_bound = staleness_bound
        self.heartbeat_timeout = heartbeat_timeout
        self._requirement_seconds = requirement_seconds
        self._clock = clock
        self._wall = wall_clock
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._keys_of: dict[str, set[Hashable]] = {}
        self._lock = threading.Lock()
        # Bumped by every invalidation and reset; an answer in flight compares it.
        self._generation = 0
        self._invalidated_at: OrderedDict[str, int] = OrderedDict()
        self._forgotten_at = 0
        self._reset_at = 0
        self._required: OrderedDict[str, Requirement] = OrderedDict()
        self._heard = float("-inf")
        self._fresh_until = float("-inf")
        self.stats = NearCacheStats()

    def __len__(self) -> int:
        return len(self._entries)

    # -- reads ------------------------------------------------------------------------

    def lookup(self, key: Hashable, token: str = "") -> Any:
        """The cached answer for `key`, or None (a miss). With a token, only an answer
        that was read with that very token is served."""
        entry = self._entries.get(key)
        if entry is None or (token and token != entry.token):
            self.stats.misses += 1
            return None
        if entry.expires <= self._wall():
            self._discard(entry)
            self.stats.misses += 1
            return None
        now = self._clock()
        if now > self._fresh_until:
            if now > self._heard + self.staleness_bound:
                self.stats.misses += 1
                return None
            self.stats.stale_hits += 1
            stale = entry.stale_value
            if stale is None:
                stale = entry.stale_value = entry.value.as_stale()
            return stale
        try:  # noqa: SIM105 (contextlib.suppress costs more than the lookup)
            self._entries.move_to_end(key)
        except KeyError:  # dropped meanwhile by the stream: served as of just before
            pass
        self.stats.hits += 1
        return entry.value

    @property
    def stream_fresh(self) -> bool:
        return self._clock() <= self._fresh_until

    def ticket(self) -> int:
        """Taken before a read goes to the server; `store` compares it."""
        return self._generation

    def requirement(self, user: str) -> Requirement | None:
        """What the user's reads must carry now, if anything."""
        required = self._required.get(user)
        if required is None or required.until > self._clock():
            return required
        with self._lock:
            if self._required.get(user) is required:
                del self._required[user]
        return None

    def store(
        self, key: Hashable, user: str, value: Any, expires: float, token: str, ticket: int
    ) -> bool:
        """Caches a server's answer read with `token` ("" none), unless its user changed
        (or a reset came) since `ticket`, or the stream is not up, or it is already
        past its valid_until (`expires`, seconds since the epoch)."""
        with self._lock:
            if (
                ticket < self._reset_at
                or ticket < self._forgotten_at
                or ticket < self._invalidated_at.get(user, 0)
                or not self._clock() <= self._fresh_until
                or expires <= self._wall()
            ):
                self.stats.not_stored += 1
                return False
            old = self._entries.pop(key, None)
            if old is not None:
                self._keys_of.get(old.user, set()).discard(key)
            self._entries[key] = _Entry(key, user, value, expires, token)
            self._keys_of.setdefault(user, set()).add(key)
            self.stats.stored += 1
            while len(self._entries) > self.max_entries:
                _, evicted = self._entries.popitem(last=False)
                self._unindex(evicted)
                self.stats.evictions += 1
            return True

    # -- the change stream and the client's writes -----------------------------------

    def heard(self) -> None:
        """The stream delivered a message (changes or a heartbeat)."""
        now = self._clock()
        self._heard = now
        self._fresh_until = now + self.heartbeat_timeout

    def invalidate(self, user: str, token: str) -> None:
        """`user` changed: drop their entries; their reads carry `token` for a while
        ("": full consistency, for a change of state derived for them)."""
        with self._lock:
            self._generation += 1
            self._invalidated_at[user] = self._generation
            self._invalidated_at.move_to_end(user)
            if len(self._invalidated_at) > REMEMBERED_INVALIDATIONS:
                _, self._forgotten_at = self._invalidated_at.popitem(last=False)
            for key in self._keys_of.pop(user, ()):
                self._entries.pop(key, None)
            self._required[user] = Requirement(token, self._clock() + self._requirement_seconds)
            self._required.move_to_end(user)
            while len(self._required) > max(self.max_entries, REMEMBERED_INVALIDATIONS):
                self._required.popitem(last=False)
            self.stats.invalidations += 1

    def reset(self) -> None:
        """The stream cannot tell what changed: drop everything."""
        with self._lock:
            self._generation += 1
            self._reset_at = self._generation
            self._entries.clear()
            self._keys_of.clear()
            self.stats.resets += 1

    def _discard(self, entry: _Entry) -> None:
        with self._lock:
            if self._entries.get(entry.key) is entry:
                del self._entries[entry.key]
                self._unindex(entry)

    def _unindex(self, entry: _Entry) -> None:
        keys = self._keys_of.get(entry.user)
        if keys is not None:
            keys.discard(entry.key)
            if not keys:
                del self._keys_of[entry.user]
