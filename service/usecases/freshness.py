"""Following the store's change feed: every worker drops what it cached for users whose
state another worker or replica changed, within a poll interval of the commit.

A `FeedFollower` runs on the server's event loop: every `poll_seconds` it reads the
changes after its position (in its own store thread, within `store_timeout_seconds`), drops
the cache entries they name and tells its listeners (open watch streams). It never
serves stale state silently:

- a gap (it fell further behind than the feed keeps, or the store was replaced) expires
  the whole cache at once, and it goes on from the feed's position;
- while the feed cannot be read for longer than `lost_after_seconds`, it expires the
  whole cache at every poll (entries live one poll interval at most: reads go to the
  store, and serve stale only when the store fails too, marked stale); when the feed is
  back it catches up from its last position (or expires all once more on a gap).

Each of these says so in a log line and a counter (FeedStats, exported as metrics).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from service.domain.deadlines import within_store_deadline
from service.usecases.cache import UserStateCache
from service.usecases.store_calls import StoreCalls
from storage.feed import BATCH_LIMIT, Change, ChangeBatch, ChangeFeed

log = logging.getLogger(__name__)

# Called on the event loop with the changes of each batch applied to the cache, and
# with None when the cache was expired as a whole (every user may have changed).
ChangeListener = Callable[[Iterable[Change] | None], None]


@dataclass(slots=True)
class FeedStats:
    """Counts since start, read now and then by the metrics exporter."""

    # Changes read from the feed, and cache entries they dropped.
    changes: int = 0
    dropped: int = 0
    # Polls that failed (store unavailable, too slow).
    errors: int = 0
    # Whole-cache expirations: the feed was lost (per poll while lost) or had a gap.
    lost_expirations: int = 0
    gaps: int = 0
    # time.monotonic() of the last successful poll (0: none yet).
    last_success: float = 0.0
    # Reads of the store's feed by this follower (0 when it reads the pod's relay, which
    # counts its own: storage.feed_relay).
    store_reads: int = 0

    def lag_seconds(self, now: float | None = None) -> float:
        """Seconds since the feed was last read successfully (a worker that reads it is
        at most this much behind the store, plus the poll's own time)."""
        if self.last_success == 0.0:
            return float("inf")
        return max(0.0, (time.monotonic() if now is None else now) - self.last_success)


class FeedFollower:
    def __init__(
        self,
        feed: ChangeFeed,
        cache: UserStateCache,
        store: StoreCalls,
        *,
        poll_seconds: float = 0.1,
        store_timeout_seconds: float = 0.5,
        lost_after_seconds: float = 1.0,
    ) -> None:
        self._feed = feed
        # A feed whose reads wait for a change (the pod's relay) is read again at once;
        # a store's feed is polled every poll_seconds.
        self._long_poll = bool(getattr(feed, "long_poll", False))
        self._cache = cache
        self._store = store
        self._poll = poll_seconds
        self._timeout = store_timeout_seconds
        self._lost_after = lost_after_seconds
        self._listeners: list[ChangeListener] = []
        self._position: str | None = None
        self._lost = False
        self._started = time.monotonic()
        self.stats = FeedStats()

    def listen(self, listener: ChangeListener) -> Callable[[], None]:
        """Calls `listener` after each applied batch; returns the function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @property
    def lost(self) -> bool:
        return self._lost

    @property
    def lost_after_seconds(self) -> float:
        """How long the feed may go unread before the follower calls it lost."""
        return self._lost_after

    @property
    def position(self) -> str | None:
        """The feed position that every change told to the listeners reaches (None: the
        feed was never read)."""
        return self._position

    def close(self) -> None:
        """Releases the store thread(s) of the polls (after the task is cancelled)."""
        self._store.close()

    async def run(self) -> None:
        """Follows the feed until cancelled."""
        while True:
            try:
                full = await self.poll_once()
            except Exception:  # a bug must not end the following for good
                log.exception("applying the change feed failed; expiring the cache")
                self._cache.expire_all()
                full = False
            if not full:
                await asyncio.sleep(self._poll)

    async def poll_once(self) -> bool:
        """One read of the feed, applied; True when the next read should follow at once
        (the batch was full, or the feed waits for changes itself)."""
        if not self._long_poll:
            self.stats.store_reads += 1
        try:
            # The deadline travels into the store thread (its context is copied): the
            # call ends there too, never holding a store thread past its budget.
            with within_store_deadline(self._timeout):
                batch = await self._read()
        except Exception as error:  # whatever the store raised: the feed is not readable
            self._failed(error)
            return False
        self._apply(batch)
        return self._long_poll or len(batch.changes) >= BATCH_LIMIT

    async def read_after(self, position: str, store: StoreCalls) -> ChangeBatch:
        """The feed's changes after `position`, for a caller resuming from a position this
        follower has not published (WatchChanges): read in `store`'s threads (not the
        follower's own), within the store timeout."""
        with within_store_deadline(self._timeout):
            return await store.run(self._timeout, self._feed.read_changes, position, BATCH_LIMIT)

    async def _read(self) -> ChangeBatch:
        if self._position is not None:
            return await self._store.run(
                self._timeout, self._feed.read_changes, self._position, BATCH_LIMIT
            )
        # A worker starting with an empty cache needs no change before this.
        position = await self._store.run(self._timeout, self._feed.feed_position)
        # Anything cached before (while the feed could not be read) may predate a change
        # before this position.
        if len(self._cache):
            self._cache.expire_all()
        return ChangeBatch((), position)

    def _failed(self, error: Exception) -> None:
        self.stats.errors += 1
        since = self.stats.last_success or self._started
        if time.monotonic() - since < self._lost_after:
            return
        self._cache.expire_all()
        self.stats.lost_expirations += 1
        if not self._lost:
            self._lost = True
            log.warning(
                "change feed lost (%s): expiring the cache at every poll until it is back",
                error,
            )
            self._tell(None)

    def _apply(self, batch: ChangeBatch) -> None:
        self.stats.last_success = time.monotonic()
        if self._lost:
            self._lost = False
            log.warning("change feed back: catching up from position %s", self._position)
        self._position = batch.position
        if batch.gap:
            self.stats.gaps += 1
            log.warning(
                "change feed gap (fell behind what the feed keeps, or the store was "
                "replaced): expired the whole cache; following from position %s",
                batch.position,
            )
            self._cache.expire_all()
            self._tell(None)
        if not batch.changes:
            return
        self.stats.changes += len(batch.changes)
        for change in batch.changes:
            if self._cache.drop(change.user_id, change.version):
                self.stats.dropped += 1
        self._tell(batch.changes)

    def _tell(self, changes: Iterable[Change] | None) -> None:
        for listener in list(self._listeners):
            try:
                listener(changes)
            except Exception:
                log.exception("a change feed listener failed")
