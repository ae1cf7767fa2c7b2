"""Change streams (EntitlementService.WatchChanges): which users' state changed, for
callers that keep decisions in their own process (near caches).

`ChangeStreams` is the one subscription point of a worker: the change feed's follower
publishes into it (`publish`, its listener), and every open stream reads from it. It keeps
the recent published batches in a bounded log, numbered in publication order; a stream is a
cursor into that log, so publishing costs one event per open stream however many changes a
batch holds, and a slow stream coalesces everything published since its last message into
one (each user once, at its newest version). A stream whose cursor falls out of the log (it
was slower than the log is long), a feed gap, or a resume from a position the log does not
know: the stream sends `reset` (the caller drops everything it cached).

Positions are the feed's positions as the follower reported them, recorded with the log
index they stand for; a heartbeat (sent while the feed is followed and nothing changed)
records the follower's current position, so that an idle stream also has a resumable one.
A position the log does not know (another worker's or replica's: their batches end
elsewhere) is caught up from the feed itself (`catch_up`, once per resume): the changes
after it up to a position the log knows, then the log; when the two do not meet within
a second (the feed moved on meanwhile), the stream begins with a reset.

Another follower (one feed reader per pod, fanning out to its workers) only has to call
`publish` and provide `feed_position` and `feed_lost`: the streams do not know where the
changes come from.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass

from service.domain.errors import (
    ChangeStreamsClosed,
    FieldViolation,
    InvalidRequest,
    TooManyChangeStreams,
)
from service.usecases.tokens import issue_token
from storage.feed import Change, ChangeBatch

log = logging.getLogger(__name__)

# The log keeps at most this many changes (oldest batches dropped first): what a stream
# may fall behind, or resume from, before it gets a reset.
LOG_CHANGES = 20_000
# Positions remembered for resuming (batch ends and heartbeats), oldest dropped first.
LOG_POSITIONS = 4_096
# Changes per message; a bigger batch continues in the next messages (without position).
MAX_CHANGES_PER_MESSAGE = 1_000
MAX_POSITION_LENGTH = 256
# A stream that sent nothing for this long sends a heartbeat (while the feed is followed).
HEARTBEAT_SECONDS = 1.0
# A resume caught up from the feed waits this long at most for the log to reach where the
# catch-up read ended.
CATCH_UP_JOIN_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class UserChange:
    user_id: str
    # The user's version after the change; 0: derived state changed (read with full
    # consistency); `token` is then empty.
    version: int
    token: str


@dataclass(frozen=True, slots=True)
class ChangeMessage:
    reset: bool
    changes: tuple[UserChange, ...]
    # Empty when the next message continues the same batch.
    position: str


@dataclass(frozen=True, slots=True)
class _Entry:
    index: int
    # None: a reset (the feed had a gap: anything may have changed). As sent: each
    # change's token made once here, not once per stream.
    changes: tuple[UserChange, ...] | None


class ChangeStreams:
    def __init__(
        self,
        max_streams: int,
        feed_position: Callable[[], str | None],
        feed_lost: Callable[[], bool],
        *,
        catch_up: Callable[[str], Awaitable[ChangeBatch]] | None = None,
        log_changes: int = LOG_CHANGES,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.max_streams = max_streams
        self._feed_position = feed_position
        self._feed_lost = feed_lost
        self._catch_up = catch_up
        self._log_changes = log_changes
        self._heartbeat = heartbeat_seconds
        self._log: deque[_Entry] = deque()
        self._logged_changes = 0
        # The index of the newest entry (0: none yet); entries are numbered from 1.
        self._last = 0
        # Feed position -> the log index everything up to which it covers.
        self._positions: OrderedDict[str, int] = OrderedDict()
        self._wakes: set[asyncio.Event] = set()
        self._closed = False
        # Counts since start (metrics, benchmarks).
        self.messages_sent = 0
        self.changes_sent = 0
        self.resets_sent = 0
        # Resumes from positions the log did not know: caught up from the feed, or reset.
        self.caught_up = 0
        self.catch_up_failed = 0

    @property
    def open_streams(self) -> int:
        return len(self._wakes)

    # -- the publishing side (the feed follower's listener, on the event loop) ----------

    def publish(self, changes: Iterable[Change] | None) -> None:
        """A batch of changes applied by the follower (None: the cache was expired as a
        whole). A None while the feed is lost is not a reset: the follower catches up
        from its last position when the feed is back (the streams meanwhile send no
        heartbeat, so callers see them as down); any other None is a gap."""
        if changes is None and self._feed_lost():
            self._wake_all()
            return
        batch = None if changes is None else tuple(_sent(change) for change in changes)
        self._last += 1
        self._log.append(_Entry(self._last, batch))
        self._logged_changes += len(batch) if batch is not None else 1
        while self._logged_changes > self._log_changes and len(self._log) > 1:
            dropped = self._log.popleft()
            self._logged_changes -= len(dropped.changes) if dropped.changes is not None else 1
        position = self._feed_position()
        if position is not None:
            self._remember(position, self._last)
        self._wake_all()

    def close(self) -> None:
        """Ends every open stream with ChangeStreamsClosed, and refuses new ones."""
        self._closed = True
        self._wake_all()

    # -- the streams ------------------------------------------------------------------

    def check_position(self, position: str) -> None:
        if len(position) > MAX_POSITION_LENGTH:
            raise InvalidRequest(
                [FieldViolation("position", f"longer than {MAX_POSITION_LENGTH} characters")]
            )

    async def stream(self, position: str = "") -> AsyncGenerator[ChangeMessage, None]:
        """The messages of one change stream, until the caller stops iterating or the
        service closes (ChangeStreamsClosed)."""
        self.check_position(position)
        self._check_open()
        if len(self._wakes) >= self.max_streams:
            raise TooManyChangeStreams(
                f"this server holds {self.max_streams} open change streams; retry later"
            )
        wake = asyncio.Event()
        self._wakes.add(wake)
        try:
            cursor, reset = self._start(position)
            prefix: tuple[Change, ...] = ()
            if reset and self._catch_up is not None:
                caught = await self._caught_up(position)
                if caught is not None:
                    cursor, prefix = caught
                    reset = False
            # The first message at once: the caller knows the stream is up, and where.
            first = self._messages(cursor, reset, prefix)
            cursor = self._last
            for message in first:
                yield self._count(message)
            while True:
                if cursor == self._last:
                    wake.clear()
                    woken = await self._wait(wake)
                    self._check_open()
                    if cursor == self._last:
                        heartbeat = None if woken else self._heartbeat_message()
                        if heartbeat is not None:
                            yield self._count(heartbeat)
                        continue
                self._check_open()
                fell_behind = not self._log or self._log[0].index > cursor + 1
                batch = self._messages(cursor, fell_behind)
                cursor = self._last
                for message in batch:
                    yield self._count(message)
        finally:
            self._wakes.discard(wake)

    def _check_open(self) -> None:
        if self._closed:
            raise ChangeStreamsClosed("the server is shutting down: resume on another server")
        if self._feed_position() is None:
            raise ChangeStreamsClosed("this server follows no change feed (yet)")

    def _start(self, position: str) -> tuple[int, bool]:
        """The cursor a new stream starts from, and whether it must begin with a reset."""
        if not position:
            return self._last, False
        index = self._positions.get(position)
        if index is None:
            current = self._feed_position()
            if current is not None and position == current:
                return self._last, False
            return self._last, True
        if index < self._last and (not self._log or self._log[0].index > index + 1):
            return self._last, True  # the log no longer holds what followed it
        return index, False

    async def _caught_up(self, position: str) -> tuple[int, tuple[Change, ...]] | None:
        """The log index where the feed's changes after `position` meet the log, with
        those changes; None when they cannot be had (the stream then begins with reset)."""
        assert self._catch_up is not None
        try:
            batch = await self._catch_up(position)
        except Exception as error:  # the feed unreadable, a position it cannot parse
            log.debug("change stream catch-up from %r failed: %s", position, error)
            batch = None
        if batch is not None and not batch.gap:
            loop = asyncio.get_running_loop()
            give_up = loop.time() + CATCH_UP_JOIN_SECONDS
            while loop.time() < give_up:
                index = self._positions.get(batch.position)
                if index is None and batch.position == self._feed_position():
                    index = self._last
                if index is not None:
                    if index < self._last and (not self._log or self._log[0].index > index + 1):
                        break  # the log no longer holds what followed
                    self.caught_up += 1
                    return index, batch.changes
                await asyncio.sleep(0.02)  # the follower may be about to publish it
        self.catch_up_failed += 1
        return None

    def _messages(
        self, cursor: int, reset: bool, prefix: tuple[Change, ...] = ()
    ) -> list[ChangeMessage]:
        """What a stream at `cursor` is sent to reach the newest entry: the changes
        after it (after the newest reset among them, which becomes the message's),
        after `prefix` (changes caught up from the feed, which end at `cursor`)."""
        newest: dict[str, UserChange] = {}
        entries = [_Entry(cursor, tuple(_sent(c) for c in prefix))] if prefix else []
        entries += [entry for entry in self._log if entry.index > cursor]
        for entry in entries:
            if entry.changes is None:
                reset = True
                newest.clear()
                continue
            for change in entry.changes:
                # Re-inserted: a user's place is that of their newest change.
                previous = newest.pop(change.user_id, None)
                newest[change.user_id] = _merged(previous, change)
        position = self._position_of(self._last)
        changes = list(newest.values())
        messages = []
        for start in range(0, max(len(changes), 1), MAX_CHANGES_PER_MESSAGE):
            chunk = tuple(changes[start : start + MAX_CHANGES_PER_MESSAGE])
            last = start + MAX_CHANGES_PER_MESSAGE >= len(changes)
            messages.append(ChangeMessage(reset and start == 0, chunk, position if last else ""))
        return messages

    def _heartbeat_message(self) -> ChangeMessage | None:
        if self._feed_lost():
            return None
        position = self._feed_position()
        if position is None:
            return None
        self._remember(position, self._last)
        return ChangeMessage(False, (), position)

    def _position_of(self, index: int) -> str:
        """The newest known position at `index` (the follower's, recorded then)."""
        current = self._feed_position()
        if current is not None and index == self._last:
            self._remember(current, index)
            return current
        for position, at in reversed(self._positions.items()):
            if at <= index:
                return position
        return ""

    def _remember(self, position: str, index: int) -> None:
        if position in self._positions:
            # A position maps to the first index it was seen at: nothing after it is
            # covered by it (an idle feed keeps its position across heartbeats).
            self._positions.move_to_end(position)
            return
        self._positions[position] = index
        while len(self._positions) > LOG_POSITIONS:
            self._positions.popitem(last=False)

    def _count(self, message: ChangeMessage) -> ChangeMessage:
        self.messages_sent += 1
        self.changes_sent += len(message.changes)
        self.resets_sent += message.reset
        return message

    def _wake_all(self) -> None:
        for wake in self._wakes:
            wake.set()

    async def _wait(self, wake: asyncio.Event) -> bool:
        """Waits for a wake-up or a heartbeat's time; True when woken."""
        try:  # asyncio.timeout: wait_for can swallow a cancellation (see store_calls)
            async with asyncio.timeout(self._heartbeat):
                await wake.wait()
        except TimeoutError:
            return wake.is_set()
        return True


def _sent(change: Change) -> UserChange:
    """A change as streams send it: version 0 and no token for a derived change."""
    if change.version is None:
        return UserChange(change.user_id, 0, "")
    return UserChange(change.user_id, change.version, issue_token(change.user_id, change.version))


def _merged(previous: UserChange | None, change: UserChange) -> UserChange:
    """The newest of a user's changes; a derived change (version 0) wins over a versioned
    one (a read with full consistency is at least as new as any version)."""
    if previous is None:
        return change
    if change.version == 0 or previous.version == 0:
        return change if change.version == 0 else previous
    return previous if previous.version >= change.version else change
