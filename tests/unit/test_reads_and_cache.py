"""The read use cases over the in-memory store: caching, memoised decisions that never
outlive valid_until, consistency tokens, validation."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from service.catalog import load_catalog
from service.domain.account import (
    AccountState,
    Store,
    Subscription,
    SubscriptionStatus,
    UserState,
)
from service.domain.decisions import DenialReason
from service.domain.errors import InvalidRequest
from service.domain.rules import Platform
from service.usecases.cache import UserStateCache
from service.usecases.reads import Consistency, ReadService
from service.usecases.tokens import MalformedToken, issue_token, parse_token
from storage.memory import MemoryRepository
from tests.state_writes import AccountChange, write_state
from tests.unit.factories import SyncReads

START = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CATALOG = load_catalog()


class CountingRepository(MemoryRepository):
    """The in-memory store, counting loads (a fake, not a mock)."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0

    def load(self, user_id: str, *, min_version: int = 0, stale_ok: bool = False) -> UserState:
        self.loads += 1
        return super().load(user_id, min_version=min_version, stale_ok=stale_ok)


class Clocks:
    def __init__(self) -> None:
        self.now = START
        self.monotonic = 1000.0

    def advance(self, delta: timedelta) -> None:
        self.now += delta
        self.monotonic += delta.total_seconds()


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def repository() -> CountingRepository:
    return CountingRepository()


def make_reads(repository: CountingRepository, clocks: Clocks, ttl: float = 3600.0) -> SyncReads:
    cache = UserStateCache(1000, ttl, monotonic=lambda: clocks.monotonic)
    return SyncReads(ReadService(CATALOG, repository, cache, clock=lambda: clocks.now))


def trial(period_end: datetime) -> AccountChange:
    sub = Subscription(
        "sub-1",
        "premium_individual",
        SubscriptionStatus.TRIALING,
        Store.WEB,
        START - timedelta(days=1),
        period_end,
    )
    return lambda state: dataclasses.replace(state, subscriptions=(sub,))


def test_cache_hit_reads_the_store_once(repository: CountingRepository, clocks: Clocks) -> None:
    reads = make_reads(repository, clocks)
    for _ in range(5):
        reads.get_entitlement("u1", "offline_downloads")
        reads.list_entitlements("u1")
    assert repository.loads == 1


def test_memoised_decision_is_not_served_past_valid_until(
    repository: CountingRepository, clocks: Clocks
) -> None:
    period_end = START + timedelta(hours=1)
    write_state(repository, "u1", trial(period_end))
    reads = make_reads(repository, clocks, ttl=24 * 3600)
    first = reads.get_entitlement("u1", "offline_downloads").value
    assert first.granted
    assert first.valid_until == period_end
    clocks.advance(timedelta(minutes=59))
    assert reads.get_entitlement("u1", "offline_downloads").value.granted
    clocks.advance(timedelta(minutes=1))
    after = reads.get_entitlement("u1", "offline_downloads").value
    assert not after.granted
    assert after.denial is DenialReason.EXPIRED
    assert repository.loads == 1  # the state is still fresh; only the decision changed


def test_state_older_than_ttl_is_reloaded(repository: CountingRepository, clocks: Clocks) -> None:
    reads = make_reads(repository, clocks, ttl=30)
    assert not reads.get_entitlement("u1", "offline_downloads").value.granted
    write_state(repository, "u1", trial(START + timedelta(days=30)))
    clocks.advance(timedelta(seconds=29))
    assert not reads.get_entitlement("u1", "offline_downloads").value.granted
    clocks.advance(timedelta(seconds=1))
    assert reads.get_entitlement("u1", "offline_downloads").value.granted
    assert repository.loads == 2


def test_token_forces_a_newer_state(repository: CountingRepository, clocks: Clocks) -> None:
    reads = make_reads(repository, clocks)
    reads.get_entitlement("u1", "offline_downloads")
    written = write_state(repository, "u1", trial(START + timedelta(days=30)))
    stale = reads.get_entitlement("u1", "offline_downloads").value
    assert not stale.granted
    token = issue_token("u1", written.version)
    assert reads.get_entitlement("u1", "offline_downloads", Consistency(token=token)).value.granted
    # Other users' tokens do not apply, and a satisfied token costs no further store read.
    loads = repository.loads
    reads.get_entitlement("u1", "offline_downloads", Consistency(token=token))
    reads.get_entitlement("u1", "offline_downloads", Consistency(issue_token("u2", 50)))
    assert repository.loads == loads


def test_full_consistency_always_reads_the_store(
    repository: CountingRepository, clocks: Clocks
) -> None:
    reads = make_reads(repository, clocks)
    for _ in range(3):
        reads.get_entitlement("u1", "shuffle_play", Consistency(full=True))
    assert repository.loads == 3


def test_batch_reads_each_user_once(repository: CountingRepository, clocks: Clocks) -> None:
    reads = make_reads(repository, clocks)
    queries = [(f"u{i % 3}", feature) for i, feature in enumerate(CATALOG.features)]
    decisions = reads.batch_get_entitlements(queries).value
    assert [(d.user_id, d.feature.id) for d in decisions] == queries
    assert repository.loads == 3


def test_validation_collects_every_problem(repository: CountingRepository, clocks: Clocks) -> None:
    reads = make_reads(repository, clocks)
    with pytest.raises(InvalidRequest) as raised:
        reads.get_offers("", "sweden", None, Consistency(token="%%%"))
    assert [v.field for v in raised.value.violations] == [
        "user_id",
        "market",
        "platform",
        "consistency.consistency_token",
    ]
    assert repository.loads == 0


def test_cache_is_bounded_by_entries(clocks: Clocks) -> None:
    cache = UserStateCache(2, 60, monotonic=lambda: clocks.monotonic)
    for user_id in ("a", "b", "c"):
        cache.put(UserState(AccountState.new(user_id)))
    assert len(cache) == 2
    assert cache.get("a") is None


def test_cache_keeps_the_newer_of_two_racing_loads(clocks: Clocks) -> None:
    cache = UserStateCache(10, 60, monotonic=lambda: clocks.monotonic)
    cache.put(UserState(AccountState("a", version=5)))
    cache.put(UserState(AccountState("a", version=4)))
    entry = cache.get("a")
    assert entry is not None
    assert entry.state.account.version == 5


def versioned(user_id: str, version: int) -> UserState:
    return UserState(AccountState(user_id, version=version))


def test_a_change_feed_drop_keeps_only_entries_already_that_new(clocks: Clocks) -> None:
    cache = UserStateCache(10, 60, monotonic=lambda: clocks.monotonic)
    cache.put(versioned("a", 5))
    assert not cache.drop("a", 5)  # a read after the write got here first
    assert cache.get("a") is not None
    assert cache.drop("a", 6)
    assert cache.get("a") is None
    cache.put(versioned("m", 2))
    assert cache.drop("m", None)  # a household member: whatever it holds
    assert cache.stats.invalidations == 2


def test_a_read_begun_before_a_drop_is_not_cached(clocks: Clocks) -> None:
    cache = UserStateCache(10, 60, monotonic=lambda: clocks.monotonic)
    began = clocks.monotonic
    clocks.advance(timedelta(milliseconds=10))
    cache.drop("a", 6)  # the feed: a's version 6 committed while the read was under way
    clocks.advance(timedelta(milliseconds=10))
    entry = cache.put(versioned("a", 5), loaded_since=began)
    assert entry.state.account.version == 5  # returned to its callers...
    assert cache.get("a") is None  # ...but not cached
    cache.put(versioned("a", 6), loaded_since=clocks.monotonic)
    assert cache.get("a") is not None
    assert cache.changed_at("b") == float("-inf")


def test_expiring_all_entries_leaves_them_for_stale_if_error_only(clocks: Clocks) -> None:
    cache = UserStateCache(10, 60, monotonic=lambda: clocks.monotonic)
    began = clocks.monotonic
    cache.put(versioned("a", 1))
    clocks.advance(timedelta(milliseconds=10))
    cache.expire_all()
    assert cache.get("a") is None
    assert cache.get_stale("a", 0, 300) is not None
    cache.put(versioned("b", 1), loaded_since=began)  # began before: may predate a change
    assert cache.get("b") is None
    clocks.advance(timedelta(milliseconds=10))
    cache.put(versioned("b", 1), loaded_since=clocks.monotonic)
    assert cache.get("b") is not None


def test_token_round_trip_and_rejects() -> None:
    token = parse_token(issue_token("user-1", 42))
    assert token.version == 42
    assert token.applies_to("user-1")
    assert not token.applies_to("x")
    for bad in ("", "abc", "MS5hYmMuNA", issue_token("u", 1) + "x" * 200):
        with pytest.raises(MalformedToken):
            parse_token(bad)


def test_memoised_offers_are_reused_until_their_valid_until(
    repository: CountingRepository, clocks: Clocks
) -> None:
    lapsed = Subscription(
        "sub-old",
        "premium_individual",
        SubscriptionStatus.EXPIRED,
        Store.WEB,
        START - timedelta(days=400),
        START - timedelta(days=29),
        last_event_at=START - timedelta(days=29),
    )
    write_state(repository, "u1", lambda s: dataclasses.replace(s, subscriptions=(lapsed,)))
    reads = make_reads(repository, clocks, ttl=7 * 24 * 3600)
    first = reads.get_offers("u1", "US", Platform.WEB).value
    assert first is reads.get_offers("u1", "US", Platform.WEB).value  # memoised
    winback = "premium-individual-winback-3m"
    assert winback not in {e.offer.id for e in first.eligible}  # lapsed 29 of 30 days
    assert first.valid_until == START + timedelta(days=1)
    clocks.advance(timedelta(days=1))
    later = reads.get_offers("u1", "US", Platform.WEB).value
    assert winback in {e.offer.id for e in later.eligible}
    assert repository.loads == 1  # the state was fresh; only the answer expired
