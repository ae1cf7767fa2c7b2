"""The storage contract of the change feed (storage.feed) and the readiness probe. Every
backend in conftest.BACKENDS must pass these unchanged.
"""

from __future__ import annotations

import dataclasses

import pytest

from service.domain.account import (
    AccountState,
    HouseholdMembership,
    HouseholdRole,
)
from storage.feed import BATCH_LIMIT, Change, ChangeFeed
from storage.repository import (
    AccountRepository,
    Mutation,
    check_store,
)
from tests.contract.builders import (
    RECORDED,
    ChangeFailed,
    at,
    key,
    redeem,
    run_appliers,
)
from tests.state_writes import write_state


def feed_of(repository: AccountRepository) -> ChangeFeed:
    assert isinstance(repository, ChangeFeed), "every backend publishes a change feed"
    return repository


def read_all(feed: ChangeFeed, after: str, limit: int = BATCH_LIMIT) -> tuple[list[Change], str]:
    """Every change after `after`, in batches of `limit`, and the position after them."""
    changes: list[Change] = []
    while True:
        batch = feed.read_changes(after, limit)
        assert not batch.gap
        changes.extend(batch.changes)
        after = batch.position
        if len(batch.changes) < limit:
            return changes, after


def test_the_feed_publishes_each_write_in_commit_order(repository: AccountRepository) -> None:
    feed = feed_of(repository)
    start = feed.feed_position()
    assert feed.read_changes(start).changes == ()
    write_state(repository, "a", lambda s: s)
    repository.apply("b", key("r1"), redeem("o1"), RECORDED)
    write_state(repository, "a", lambda s: s)
    changes, position = read_all(feed, start, limit=2)
    assert changes == [Change("a", 1), Change("b", 1), Change("a", 2)]
    assert feed.read_changes(position).changes == ()
    assert feed.feed_position() == position  # a new reader starts after them


def test_writes_that_store_nothing_publish_nothing(repository: AccountRepository) -> None:
    feed = feed_of(repository)
    repository.apply("b", key("r1"), redeem("o1"), RECORDED)
    start = feed.feed_position()
    repository.apply("b", key("r1"), redeem("o1"), RECORDED)  # a replay
    repository.apply("b", key("r2"), lambda s: Mutation.unchanged({}), RECORDED)

    def failing(state: AccountState) -> AccountState:
        raise ChangeFailed("nope")

    with pytest.raises(ChangeFailed):
        write_state(repository, "b", failing)
    assert feed.read_changes(start).changes == ()


def test_a_managers_write_publishes_the_members_of_the_household(
    repository: AccountRepository,
) -> None:
    feed = feed_of(repository)
    seat = HouseholdMembership("hh-1", HouseholdRole.MANAGER, "manager", at(-30), None, "m1")
    start = feed.feed_position()
    write_state(repository, "manager", lambda s: dataclasses.replace(s, memberships=(seat,)))
    # The seat released: the member who left must drop the household too.
    left = dataclasses.replace(seat, left_at=at(-1))
    write_state(repository, "manager", lambda s: dataclasses.replace(s, memberships=(left,)))
    write_state(repository, "manager", lambda s: dataclasses.replace(s, memberships=()))
    changes, _ = read_all(feed, start)
    assert changes == [
        Change("manager", 1),
        Change("m1", None),
        Change("manager", 2),
        Change("m1", None),
        Change("manager", 3),
        Change("m1", None),
    ]


def test_concurrent_writes_are_all_published_once(repository: AccountRepository) -> None:
    feed = feed_of(repository)
    start = feed.feed_position()
    count = 16
    run_appliers(
        count, lambda i: repository.apply(f"u{i % 4}", key(f"r{i}"), redeem(f"o{i}"), RECORDED)
    )
    changes, _ = read_all(feed, start, limit=5)
    assert sorted((c.user_id, c.version) for c in changes) == sorted(
        (f"u{u}", v) for u in range(4) for v in range(1, count // 4 + 1)
    )
    for user in range(4):  # each user's versions in commit order
        versions = [c.version or 0 for c in changes if c.user_id == f"u{user}"]
        assert versions == sorted(versions)
        assert 0 not in versions


def test_a_healthy_store_passes_the_readiness_probe(repository: AccountRepository) -> None:
    write_state(repository, "u", lambda s: s)
    check_store(repository)
    check_store(repository, writable=True)  # a backend that cannot tell: reads only
    assert repository.load("u").account.version == 1
