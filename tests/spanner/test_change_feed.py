"""The Spanner change feed (storage/spanner/changes.py) on the real emulator: what the
contract suite (tests/contract, which runs the feed tests on Spanner too) cannot show.
Commits racing a reader are never skipped, a write's changes come out in order through
batches of one, the table is sharded and cleared, positions older than the retention (or
of another store) are gaps while an idle reader never falls into one, and a Spanner
outage fails feed reads within their budget, after which reading goes on from the old
position."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.domain.account import AccountState, HouseholdMembership, HouseholdRole
from service.domain.deadlines import within_store_deadline
from service.domain.errors import DeadlineExceeded, StoreUnavailable
from storage.feed import Change
from storage.spanner import DatabasePath, SpannerRepository, migrate
from storage.spanner.changes import TABLE, Position, shard_of
from storage.spanner.client import database_handle
from tests.spanner_emulator import SpannerEmulator
from tests.state_writes import write_state

SLACK = 2.0  # scheduling slack on a busy 2-core machine
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def same(state: AccountState) -> AccountState:
    return state


def query(emulator: SpannerEmulator, path: DatabasePath, sql: str) -> list[list[Any]]:
    with database_handle(path, emulator.host).snapshot() as snapshot:
        return [list(row) for row in snapshot.execute_sql(sql)]


def drain(repo: SpannerRepository, after: str, limit: int = 1000) -> tuple[list[Change], str]:
    """Every change after `after` (no gap allowed), and the position after them."""
    changes: list[Change] = []
    while True:
        batch = repo.read_changes(after, limit)
        assert not batch.gap, after
        changes.extend(batch.changes)
        after = batch.position
        if len(batch.changes) < limit:
            return changes, after


def test_commits_racing_a_polling_reader_are_each_read_once_in_order(
    spanner_emulator: SpannerEmulator,
) -> None:
    """Two writer threads commit while a reader polls in small batches (so it stops inside
    a timestamp too): every change is read exactly once, each user's in version order.
    A reader that kept its own clock, or the newest timestamp it saw without the read
    timestamp's guarantee, would skip commits that became visible after it moved on."""
    repo = SpannerRepository(
        spanner_emulator.create_database("feed-race"), endpoint=spanner_emulator.host
    )
    start = repo.feed_position()
    writes_per_thread = 20
    done = threading.Event()
    read: list[Change] = []
    failures: list[BaseException] = []

    def writer(thread: int) -> None:
        try:
            for i in range(writes_per_thread):
                write_state(repo, f"t{thread}-u{i % 3}", same)
        except BaseException as error:
            failures.append(error)

    def reader() -> None:
        position = start
        try:
            while True:
                finished = done.is_set()  # read once more after the writers finished
                batch = repo.read_changes(position, 3)
                assert not batch.gap
                read.extend(batch.changes)
                position = batch.position
                if finished and len(batch.changes) < 3:
                    return
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(2)]
    follower = threading.Thread(target=reader)
    follower.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    done.set()
    follower.join(timeout=120)
    assert not failures, failures
    writes = Counter(i % 3 for i in range(writes_per_thread))  # per user of a thread
    expected = Counter(
        (f"t{t}-u{u}", v) for t in range(2) for u, n in writes.items() for v in range(1, n + 1)
    )
    assert Counter((c.user_id, c.version) for c in read) == expected
    for user in {c.user_id for c in read}:
        versions = [c.version or 0 for c in read if c.user_id == user]
        assert versions == sorted(versions), user


def test_a_write_with_many_changes_is_read_in_order_one_at_a_time(
    spanner_emulator: SpannerEmulator,
) -> None:
    """A manager's write publishes the manager and three members at one commit timestamp:
    batches of one stop inside it and go on from there."""
    repo = SpannerRepository(
        spanner_emulator.create_database("feed-batches"), endpoint=spanner_emulator.host
    )
    seats = tuple(
        HouseholdMembership("hh", HouseholdRole.MANAGER, "boss", T0, None, member)
        for member in ("m1", "m2", "m3")
    )
    start = repo.feed_position()
    write_state(repo, "boss", lambda s: dataclasses.replace(s, memberships=seats))
    write_state(repo, "other", same)
    changes, position = drain(repo, start, limit=1)
    assert changes == [
        Change("boss", 1),
        Change("m1", None),
        Change("m2", None),
        Change("m3", None),
        Change("other", 1),
    ]
    assert repo.read_changes(position).changes == ()


def test_changes_are_spread_over_shards_and_clear_empties_the_feed(
    spanner_emulator: SpannerEmulator,
) -> None:
    path = spanner_emulator.create_database("feed-shards")
    repo = SpannerRepository(path, endpoint=spanner_emulator.host)
    users = [f"user-{i}" for i in range(24)]
    for user in users:
        write_state(repo, user, same)
    rows = query(spanner_emulator, path, f"SELECT UserId, Shard FROM {TABLE}")
    assert sorted((u, s) for u, s in rows) == sorted((u, shard_of(u)) for u in users)
    assert len({s for _, s in rows}) > 4
    policy = query(
        spanner_emulator,
        path,
        "SELECT ROW_DELETION_POLICY_EXPRESSION FROM INFORMATION_SCHEMA.TABLES"
        f" WHERE TABLE_NAME = '{TABLE}'",
    )
    assert policy == [["OLDER_THAN(CommitTs, INTERVAL 1 DAY)"]]
    spanner_emulator.clear(path)
    assert query(spanner_emulator, path, f"SELECT COUNT(*) FROM {TABLE}") == [[0]]


def test_a_position_older_than_the_retention_is_a_gap(spanner_emulator: SpannerEmulator) -> None:
    """Spanner deletes changes older than the retention (TTL): a reader that far behind
    cannot know what changed. Made short here (the table keeps a day)."""
    repo = SpannerRepository(
        spanner_emulator.create_database("feed-gap"),
        endpoint=spanner_emulator.host,
        feed_retention=timedelta(seconds=2),
    )
    behind = repo.feed_position()
    write_state(repo, "u", same)
    time.sleep(2.5)
    batch = repo.read_changes(behind)
    assert batch.gap
    assert batch.changes == ()
    # From the position it gave, the reader follows again.
    again = repo.read_changes(batch.position)
    assert (again.changes, again.gap) == ((), False)
    write_state(repo, "u", same)
    assert repo.read_changes(batch.position).changes == (Change("u", 2),)


def test_an_idle_reader_never_falls_into_a_gap(spanner_emulator: SpannerEmulator) -> None:
    """With nothing written for longer than the retention, a polling reader's position
    follows the read timestamps (not the last change's), so it never reports a gap."""
    repo = SpannerRepository(
        spanner_emulator.create_database("feed-idle"),
        endpoint=spanner_emulator.host,
        # Positions trail the read timestamp by 1.5 s: a poll may come that late on a
        # busy machine without a gap.
        feed_retention=timedelta(seconds=3),
    )
    write_state(repo, "u", same)
    position = repo.feed_position()
    until = time.monotonic() + 4.5
    while time.monotonic() < until:
        batch = repo.read_changes(position)
        assert not batch.gap
        assert batch.changes == ()
        position = batch.position
        time.sleep(0.2)
    write_state(repo, "u", same)
    batch = repo.read_changes(position)
    assert (batch.changes, batch.gap) == ((Change("u", 2),), False)


def test_positions_survive_their_text_whatever_the_user_id() -> None:
    for position in (Position(0), Position(1_796_067_320_901_482_123, ("a.b.7.c", 12))):
        assert Position.parse(position.encode()) == position
    assert Position.parse("12.x.u") is None


@pytest.mark.parametrize(
    "position",
    ["", "not-a-position", "0", str((int(time.time()) + 3600) * 10**9)],
    ids=["empty", "garbage", "sqlite-start", "future"],
)
def test_a_position_of_another_store_is_a_gap(
    spanner_emulator: SpannerEmulator, position: str
) -> None:
    repo = SpannerRepository(
        spanner_emulator.shared_database("feed-foreign"), endpoint=spanner_emulator.host
    )
    batch = repo.read_changes(position)
    assert batch.gap
    assert not repo.read_changes(batch.position).gap


def retried(call: Callable[[], object], seconds: float = 30.0) -> None:
    """Runs `call` until it stops raising StoreUnavailable (the client reconnecting)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            call()
            return
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.timeout(300)
def test_an_outage_fails_feed_reads_within_their_budget_and_reading_resumes_after(
    private_spanner_emulator: SpannerEmulator,
) -> None:
    """The emulator killed (kill -9 by its PID): feed reads raise StoreUnavailable within
    the repository's budget (or DeadlineExceeded within an RPC's), so a worker's follower
    notices instead of hanging; restarted, the same repository reads on from the
    position it had."""
    emulator = private_spanner_emulator
    path = emulator.create_database("feed-outage")
    budget = 1.0
    repo = SpannerRepository(path, endpoint=emulator.host, default_timeout=budget)
    write_state(repo, "before", same)
    position = repo.feed_position()
    emulator.kill()
    for call in (lambda: repo.read_changes(position), repo.feed_position):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            call()
        assert time.monotonic() - started < budget + SLACK
    started = time.monotonic()
    with pytest.raises((DeadlineExceeded, StoreUnavailable)), within_store_deadline(0.3):
        repo.read_changes(position)
    assert time.monotonic() - started < 0.3 + SLACK

    emulator.restart()  # empty: the instance and database are made again
    emulator.create_instance()
    emulator.create_database(name=path.database, migrated=False)
    # This process's client still holds a session of the killed emulator: the first
    # calls may fail while it makes a new one.
    retried(lambda: migrate(path, endpoint=emulator.host))
    retried(lambda: write_state(repo, "after", same))
    batch = repo.read_changes(position)
    assert (batch.changes, batch.gap) == ((Change("after", 1),), False)
