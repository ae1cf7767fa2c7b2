"""The change feed of the Spanner backend (storage.feed.ChangeFeed): a commit-timestamp
change table, UserChanges (migrations/0004_change_feed.sql), written in each write's
transaction and read with strong single-use reads of key ranges (the Read API).

Why this is exact: a strong read runs at a timestamp T that Spanner chooses and returns
(the result set's `metadata.transaction.read_timestamp`), and it sees every transaction
committed at or before T; a transaction it does not see commits after T (its snapshot
at T never changes again). So a reader that has read every change up to a point P <= T
can never later find a change committed at or before P: the next read asks for the
changes after P. A position is therefore a point in the feed's order (CommitTs,
WriterId, Seq):
- "NANOS": every change committed at or before NANOS (nanoseconds since the epoch) was
  read. A read that returned fewer than `limit` changes read everything up to T, and
  returns the newest of: its last change's commit timestamp, and T - WATERMARK_LAG (so
  that an idle reader's position follows the clock and never grows older than the
  retention, which would be a gap; and so that, after recent changes, it is the same
  position as `feed_position` returns).
- "NANOS.SEQ.WRITER": a full batch stopped inside the changes committed at NANOS (one
  write's changes share a timestamp, and writes of different users can share one too):
  every change up to (NANOS, WRITER, SEQ) was read.
Gap: Spanner deletes rows older than FEED_RETENTION (the table's ROW DELETION POLICY,
never earlier than that), so changes after a position older than T - retention may be
gone: the read reports a gap (as for a position it cannot parse, or one after T: a
position of another database).

Hotspots: the key starts with a shard (a hash of the writing user, one of FEED_SHARDS),
so commits spread over FEED_SHARDS key ranges instead of all appending at the end of
one; a read asks for every shard's range after the position and merges them in the
feed's order. Readers read shards 0..FEED_SHARDS-1 of their build: raising it is safe
once no reader of an older build runs.

The cost: each worker polls (every poll_seconds, see service.usecases.freshness) with
one strong Read RPC of FEED_SHARDS key ranges, which takes no lock; measured on the
emulator in docs/SPANNER.md ("The change feed on Spanner").
"""

from __future__ import annotations

import calendar
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.cloud import spanner
from google.cloud.spanner_v1 import KeyRange, KeySet
from google.cloud.spanner_v1.database import Database
from google.cloud.spanner_v1.transaction import Transaction

from service.domain.deadlines import store_seconds_left
from service.domain.errors import StoreUnavailable
from storage.feed import Change, ChangeBatch

TABLE = "UserChanges"
FEED_SHARDS = 16
# What UserChanges' ROW DELETION POLICY keeps (Spanner deletes older rows, never younger).
FEED_RETENTION = timedelta(days=1)
_COLUMNS = ("Shard", "CommitTs", "WriterId", "Seq", "UserId", "Version")
_SHARDS = list(range(FEED_SHARDS))
_NANOS = 10**9

_READ_COLUMNS = ("CommitTs", "WriterId", "Seq", "UserId", "Version")
# How far behind the read timestamp a caught-up position may be (see the module
# docstring), and how many of the newest changes `feed_position` looks at.
WATERMARK_LAG = timedelta(seconds=10)
POSITION_SCAN_LIMIT = 1000


def shard_of(user_id: str) -> int:
    """The shard of the changes a write of `user_id` publishes (stable across processes)."""
    return zlib.crc32(user_id.encode("utf-8")) % FEED_SHARDS


def publish(transaction: Transaction, writer_id: str, changes: Sequence[Change]) -> None:
    """Buffers the rows of `changes`, published by the write of `writer_id`, in its
    transaction; they get its commit timestamp. `insert_or_update`: a commit the client
    sends again writes the same rows."""
    if not changes:
        return
    shard = shard_of(writer_id)
    transaction.insert_or_update(
        TABLE,
        columns=_COLUMNS,
        values=[
            (shard, spanner.COMMIT_TIMESTAMP, writer_id, seq, change.user_id, change.version)
            for seq, change in enumerate(changes)
        ],
    )


@dataclass(frozen=True, slots=True)
class Position:
    """A point in the feed's order (see the module docstring)."""

    commit_nanos: int
    # (writer id, seq) of the last change read among those committed at commit_nanos;
    # None: all of them were read.
    last: tuple[str, int] | None = None

    def encode(self) -> str:
        if self.last is None:
            return str(self.commit_nanos)
        writer, seq = self.last
        return f"{self.commit_nanos}.{seq}.{writer}"

    @classmethod
    def parse(cls, text: str) -> Position | None:
        """The position `text` encodes; None when it is none of ours."""
        match = re.fullmatch(r"(\d+)(?:\.(\d+)\.(.*))?", text, flags=re.DOTALL)
        if match is None:
            return None
        nanos, seq, writer = match.groups()
        return cls(int(nanos), None if seq is None else (writer, int(seq)))


def nanos(timestamp: datetime) -> int:
    """Nanoseconds since the epoch of an aware timestamp (nanoseconds kept if it has them)."""
    fraction = getattr(timestamp, "nanosecond", timestamp.microsecond * 1000)
    return calendar.timegm(timestamp.utctimetuple()) * _NANOS + fraction


def timestamp(nanoseconds: int) -> DatetimeWithNanoseconds:
    seconds, fraction = divmod(nanoseconds, _NANOS)
    base = datetime.fromtimestamp(seconds, UTC)
    return DatetimeWithNanoseconds(  # type: ignore[no-untyped-call]
        base.year,
        base.month,
        base.day,
        base.hour,
        base.minute,
        base.second,
        nanosecond=fraction,
        tzinfo=UTC,
    )


def _read_timestamp(results: Any) -> int:
    """The read timestamp of a single-use snapshot's (consumed) result set."""
    metadata = results.metadata
    read_at = None if metadata is None else metadata.transaction.read_timestamp
    if read_at is None:
        raise StoreUnavailable("spanner answered a feed read without its read timestamp")
    return nanos(read_at)


def _lag_nanos(retention: timedelta) -> int:
    return int(min(WATERMARK_LAG, retention / 2).total_seconds() * _NANOS)


def feed_position(database: Database, retention: timedelta) -> str:
    """A new reader's position (storage.feed.ChangeFeed.feed_position): the newest change
    committed in the last moments before a strong read's timestamp T, or T - lag when
    there is none (any position up to T is exact for a reader that cached nothing; this
    one equals what `read_changes` returns when it has read everything). Reads by key
    ranges from a little before now (the local clock, so that the read touches only
    recent rows; a skewed clock only makes it find nothing, or read more)."""
    lag = _lag_nanos(retention)
    recent = Position(nanos(datetime.now(UTC)) - 2 * lag)
    with database.snapshot() as snapshot:
        results = snapshot.read(
            TABLE,
            columns=("CommitTs",),
            keyset=KeySet(ranges=[_range_after(recent, shard) for shard in _SHARDS]),
            limit=POSITION_SCAN_LIMIT,
            request_options={"request_tag": "feed-position"},
            timeout=store_seconds_left(),
        )
        newest = max((nanos(row[0]) for row in results), default=0)
        read_nanos = _read_timestamp(results)
    return Position(max(newest, read_nanos - lag)).encode()


def read_changes(database: Database, after: str, limit: int, retention: timedelta) -> ChangeBatch:
    """Up to `limit` changes after position `after` (storage.feed.ChangeFeed.read_changes).

    Reads by key ranges (the Read API, not SQL: a range read is what Spanner does best,
    and the emulator scans the whole table for the same SQL, 100x slower at 10,000
    rows). Usually one strong read of every shard's range after the position, which
    returns fewer than `limit` rows: all of them, merged in the feed's order. A backlog
    (that read is full, so some shards' ranges were cut short) reads each shard's first
    `limit` rows at the same timestamp and merges them."""
    position = Position.parse(after)
    start = position if position is not None else Position(0)
    with database.snapshot() as snapshot:
        results = snapshot.read(
            TABLE,
            columns=_READ_COLUMNS,
            keyset=KeySet(ranges=[_range_after(start, shard) for shard in _SHARDS]),
            limit=limit,
            request_options={"request_tag": "feed-read"},
            timeout=store_seconds_left(),
        )
        rows = [list(row) for row in results]
        read_nanos = _read_timestamp(results)
    oldest_kept = read_nanos - int(retention.total_seconds() * _NANOS)
    if position is None or not oldest_kept <= position.commit_nanos <= read_nanos:
        # Changes after the position may be gone (or it is of another database): every
        # change up to the read timestamp counts as read, none is known.
        return ChangeBatch((), Position(read_nanos).encode(), gap=True)
    if len(rows) >= limit:
        rows = _read_each_shard(database, start, limit, read_nanos)
    rows.sort(key=lambda row: (nanos(row[0]), row[1], row[2]))
    rows = rows[:limit]
    changes = tuple(_change(row) for row in rows)
    if len(rows) >= limit:
        last = rows[-1]
        return ChangeBatch(changes, Position(nanos(last[0]), (last[1], int(last[2]))).encode())
    # Everything committed by the read timestamp was read.
    newest = nanos(rows[-1][0]) if rows else start.commit_nanos
    caught_up = max(newest, read_nanos - _lag_nanos(retention))
    return ChangeBatch(changes, Position(caught_up).encode())


def _range_after(position: Position, shard: int) -> KeyRange:
    """The shard's rows after `position`. A key prefix as the open start excludes every
    row that begins with it: all the changes committed at the position's timestamp."""
    after: list[Any] = [shard, timestamp(position.commit_nanos)]
    if position.last is not None:
        writer, seq = position.last
        after += [writer, seq]
    return KeyRange(start_open=after, end_closed=[shard])


def _read_each_shard(
    database: Database, start: Position, limit: int, read_nanos: int
) -> list[list[Any]]:
    """Each shard's first `limit` rows after `start` as of `read_nanos`: the first
    `limit` of their union are the feed's next `limit` changes (a shard's rows beyond
    its first `limit` come after them)."""
    rows: list[list[Any]] = []
    for shard in _SHARDS:
        with database.snapshot(read_timestamp=timestamp(read_nanos)) as snapshot:
            results = snapshot.read(
                TABLE,
                columns=_READ_COLUMNS,
                keyset=KeySet(ranges=[_range_after(start, shard)]),
                limit=limit,
                request_options={"request_tag": "feed-read-backlog"},
                timeout=store_seconds_left(),
            )
            rows.extend(list(row) for row in results)
    return rows


def _change(row: Sequence[Any]) -> Change:
    _, _, _, user_id, version = row
    return Change(str(user_id), None if version is None else int(version))
