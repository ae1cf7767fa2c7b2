"""Watching a user's entitlements: the current decisions at once, then a new snapshot
whenever a watched decision changes, by a write (the change feed wakes the watch, in
whichever worker or replica the write was made) or by time (a decision's valid_until
passes).

Each watch is its own coroutine waiting on its own event: a slow reader holds back only
its own stream, and many writes to one user while a reader is slow coalesce into one
re-read. The number of open watches per worker is bounded (TooManyWatches), and
`close()` (graceful shutdown) ends them all with WatchClosed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass

from service.domain.decisions import EntitlementDecision
from service.domain.errors import (
    DeadlineExceeded,
    FieldViolation,
    InvalidRequest,
    StoreUnavailable,
    TooManyWatches,
    WatchClosed,
)
from service.domain.validation import check_feature_id, check_user_id
from service.usecases.clock import Clock, utc_now
from service.usecases.reads import ReadService, Snapshot
from service.usecases.tokens import check_token, issue_token
from storage.feed import Change

log = logging.getLogger(__name__)

# After a failed re-read (the store unavailable), the watch tries again about this much
# later: jittered by +-50%, so that watches woken together (a lost feed wakes them all) do
# not retry in step.
RETRY_SECONDS = 1.0
# Wakes a little after a valid_until, so that the decision made then is the new one.
AFTER_VALID_UNTIL_SECONDS = 0.005


class WatchReason(enum.Enum):
    INITIAL = "initial"
    WRITE = "write"
    TIME = "time"


@dataclass(frozen=True, slots=True)
class WatchUpdate:
    decisions: tuple[EntitlementDecision, ...]
    # The consistency token of the state the decisions were made from.
    token: str
    reason: WatchReason
    stale: bool


class WatchService:
    def __init__(self, reads: ReadService, max_watches: int, clock: Clock = utc_now) -> None:
        self._reads = reads
        self._max = max_watches
        self._clock = clock
        # The wake-up event of each open watch, by user.
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._open = 0
        self._closed = False

    @property
    def open_watches(self) -> int:
        return self._open

    def on_changes(self, changes: Iterable[Change] | None) -> None:
        """The change feed's listener (on the event loop): wakes the watches of the users
        that changed; None (the whole cache expired) wakes them all."""
        if changes is None:
            for events in self._watchers.values():
                for event in events:
                    event.set()
            return
        for change in changes:
            for event in self._watchers.get(change.user_id, ()):
                event.set()

    def close(self) -> None:
        """Ends every open watch with WatchClosed, and refuses new ones."""
        self._closed = True
        self.on_changes(None)

    def validate(
        self, user_id: str, feature_ids: Sequence[str], resume_token: str
    ) -> tuple[tuple[str, ...], int]:
        """The features to watch (every feature of the catalog when none are named) and
        the version the first snapshot must reach; raises InvalidRequest."""
        catalog = self._reads.catalog
        violations: list[FieldViolation] = []
        check_user_id(user_id, "user_id", violations)
        for index, feature_id in enumerate(feature_ids):
            check_feature_id(catalog, feature_id, f"feature_ids[{index}]", violations)
        if len(set(feature_ids)) != len(feature_ids):
            violations.append(FieldViolation("feature_ids", "must not repeat a feature"))
        token = check_token(resume_token, "resume_token", violations)
        if violations:
            raise InvalidRequest(violations)
        features = tuple(feature_ids) or tuple(catalog.features)
        min_version = token.version if token is not None and token.applies_to(user_id) else 0
        return features, min_version

    async def watch(
        self, user_id: str, feature_ids: Sequence[str], resume_token: str = ""
    ) -> AsyncGenerator[WatchUpdate, None]:
        """The updates of one watch, until the caller stops iterating (the client went
        away) or the service closes (WatchClosed)."""
        features, min_version = self.validate(user_id, feature_ids, resume_token)
        if self._closed:
            raise WatchClosed("the server is shutting down: resume on another server")
        if self._open >= self._max:
            raise TooManyWatches(f"this server holds {self._max} open watches; retry later")
        wake = asyncio.Event()
        self._open += 1
        self._watchers.setdefault(user_id, set()).add(wake)
        try:
            last = await self._reads.snapshot(user_id, features, min_version)
            yield self._update(user_id, last, WatchReason.INITIAL)
            retry = False
            # A write woke the watch since its last successful re-read (kept across a
            # failed re-read, so that the retry's update still says WRITE).
            written = False
            while True:
                woken = await self._wait(wake, self._seconds_to_next(last, retry))
                if self._closed:
                    raise WatchClosed("the server is shutting down: resume on another server")
                wake.clear()
                written = written or woken
                try:
                    current = await self._reads.snapshot(user_id, features, last.version)
                except (StoreUnavailable, DeadlineExceeded) as error:
                    log.debug("watch re-read failed (%s); trying again", error)
                    retry = True
                    continue
                retry = False
                if current.decisions != last.decisions:
                    reason = WatchReason.WRITE if written else WatchReason.TIME
                    yield self._update(user_id, current, reason)
                written = False
                last = current
        finally:
            self._open -= 1
            watchers = self._watchers.get(user_id)
            if watchers is not None:
                watchers.discard(wake)
                if not watchers:
                    del self._watchers[user_id]

    def _seconds_to_next(self, snapshot: Snapshot, retry: bool) -> float | None:
        """How long until a watched decision can change by itself (None: never)."""
        ends = [d.valid_until for d in snapshot.decisions if d.valid_until is not None]
        seconds = None
        if ends:
            seconds = max(0.0, (min(ends) - self._clock()).total_seconds())
            seconds += AFTER_VALID_UNTIL_SECONDS
        if retry:
            retry_in = RETRY_SECONDS * random.uniform(0.5, 1.5)
            seconds = retry_in if seconds is None else min(seconds, retry_in)
        return seconds

    @staticmethod
    async def _wait(wake: asyncio.Event, seconds: float | None) -> bool:
        """Waits for the event or `seconds`; True when the event woke it."""
        if seconds is None:
            await wake.wait()
            return True
        try:  # asyncio.timeout: wait_for can swallow a cancellation (see store_calls)
            async with asyncio.timeout(seconds):
                await wake.wait()
        except TimeoutError:
            return wake.is_set()
        return True

    @staticmethod
    def _update(user_id: str, snapshot: Snapshot, reason: WatchReason) -> WatchUpdate:
        token = issue_token(user_id, snapshot.version)
        return WatchUpdate(snapshot.decisions, token, reason, snapshot.stale)
