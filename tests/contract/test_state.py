"""The storage contract: versions, reads and writes of a user's state, round trips of
every field, failed changes and concurrent writers. Every backend in conftest.BACKENDS
must pass these unchanged.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.domain.account import (
    AccountState,
    Grant,
    GrantKind,
    HouseholdMembership,
    HouseholdRole,
    Redemption,
    Store,
    Subscription,
    SubscriptionStatus,
    UserState,
)
from storage.repository import AccountRepository
from tests.contract.builders import (
    RICH,
    ChangeFailed,
    append_redemption,
    run_threads,
)
from tests.state_writes import write_state


def test_unknown_user_loads_as_version_zero_free_state(repository: AccountRepository) -> None:
    assert repository.load("nobody") == UserState(AccountState.new("nobody"), None)
    assert repository.load("nobody").account.version == 0


def test_check_passes_on_a_healthy_store(repository: AccountRepository) -> None:
    repository.check()


def test_update_bumps_version_by_exactly_one(repository: AccountRepository) -> None:
    for expected in range(1, 4):
        stored = write_state(
            repository, "u1", lambda s: dataclasses.replace(s, home_market=f"M{s.version}")
        )
        assert stored.version == expected
        assert stored.home_market == f"M{expected - 1}"
        assert repository.load("u1").account == stored
    assert repository.load("u1").account.version == 3


def test_change_receives_current_stored_state(repository: AccountRepository) -> None:
    first = write_state(repository, "u1", lambda s: dataclasses.replace(s, home_market="DE"))
    seen: list[AccountState] = []

    def change(state: AccountState) -> AccountState:
        seen.append(state)
        return state

    write_state(repository, "u1", change)
    assert seen[-1] == first


def test_update_ignores_version_and_user_id_returned_by_change(
    repository: AccountRepository,
) -> None:
    write_state(repository, "u1", lambda s: s)
    stored = write_state(
        repository, "u1", lambda s: dataclasses.replace(s, user_id="someone-else", version=99)
    )
    assert stored.user_id == "u1"
    assert stored.version == 2
    assert repository.load("u1").account == stored
    assert repository.load("someone-else").account == AccountState.new("someone-else")


def test_users_are_independent(repository: AccountRepository) -> None:
    write_state(repository, "a", lambda s: dataclasses.replace(s, home_market="SE"))
    write_state(repository, "a", lambda s: s)
    write_state(repository, "b", lambda s: dataclasses.replace(s, home_market="US"))
    assert repository.load("a").account == AccountState("a", version=2, home_market="SE")
    assert repository.load("b").account == AccountState("b", version=1, home_market="US")


def test_rich_state_round_trips(repository: AccountRepository) -> None:
    stored = write_state(repository, RICH.user_id, lambda _: RICH)
    expected = dataclasses.replace(RICH, version=1)
    assert stored == expected
    assert repository.load(RICH.user_id).account == expected


def test_update_replaces_collections_and_clears_fields(repository: AccountRepository) -> None:
    write_state(repository, RICH.user_id, lambda _: RICH)
    smaller = dataclasses.replace(
        RICH,
        home_market=None,
        student_verified_until=None,
        subscriptions=(RICH.subscriptions[3], RICH.subscriptions[0]),  # reordered, fewer
        grants=RICH.grants[2:],
        redemptions=(),
        memberships=(),
    )
    write_state(repository, RICH.user_id, lambda _: smaller)
    assert repository.load(RICH.user_id).account == dataclasses.replace(smaller, version=2)


def test_timestamps_are_aware_and_keep_their_instant(repository: AccountRepository) -> None:
    stockholm_summer = timezone(timedelta(hours=2))
    local = datetime(2024, 6, 1, 12, 0, 0, 500, tzinfo=stockholm_summer)
    state = dataclasses.replace(AccountState.new("tz"), student_verified_until=local)
    write_state(repository, "tz", lambda _: state)
    loaded = repository.load("tz").account.student_verified_until
    assert loaded == local
    assert loaded is not None
    assert loaded.utcoffset() is not None
    assert loaded.astimezone(UTC) == datetime(2024, 6, 1, 10, 0, 0, 500, tzinfo=UTC)


_ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)


_opt_ids = st.none() | _ids


_zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)


_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=_zones
)


_opt_times = st.none() | _times


_subscriptions = st.builds(
    Subscription,
    subscription_id=_ids,
    plan_id=_ids,
    status=st.sampled_from(SubscriptionStatus),
    store=st.sampled_from(Store),
    started_at=_times,
    current_period_end=_times,
    grace_period_end=_opt_times,
    auto_renew=st.booleans(),
    last_event_at=_opt_times,
    offer_id=_opt_ids,
)


@st.composite
def _grants(draw: st.DrawFn) -> Grant:
    target = draw(_ids)
    is_feature = draw(st.booleans())
    return Grant(
        grant_id=draw(_ids),
        kind=draw(st.sampled_from(GrantKind)),
        starts_at=draw(_times),
        feature_id=target if is_feature else None,
        plan_id=None if is_feature else target,
        quota_value=draw(st.none() | st.integers(-(2**63), 2**63 - 1)),
        expires_at=draw(_opt_times),
        revoked_at=draw(_opt_times),
    )


_states = st.builds(
    AccountState,
    user_id=st.just("prop-user"),
    version=st.integers(0, 1000),  # ignored by update
    home_market=_opt_ids,
    subscriptions=st.lists(_subscriptions, max_size=4, unique_by=lambda s: s.subscription_id).map(
        tuple
    ),
    grants=st.lists(_grants(), max_size=4, unique_by=lambda g: g.grant_id).map(tuple),
    redemptions=st.lists(
        st.builds(Redemption, _ids, _ids, _times, st.sampled_from(Store)), max_size=4
    ).map(tuple),
    memberships=st.lists(
        st.builds(
            HouseholdMembership, _ids, st.sampled_from(HouseholdRole), _ids, _times, _opt_times
        ),
        max_size=3,
    ).map(tuple),
    student_verified_until=_opt_times,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(state=_states)
def test_any_state_round_trips(repository: AccountRepository, state: AccountState) -> None:
    stored = write_state(repository, "prop-user", lambda _: state)
    assert stored == dataclasses.replace(state, version=stored.version)
    assert repository.load("prop-user").account == stored


def test_exception_in_change_leaves_state_unchanged_and_propagates(
    repository: AccountRepository,
) -> None:
    before = write_state(repository, RICH.user_id, lambda _: RICH)
    error = ChangeFailed("nope")

    def failing(state: AccountState) -> AccountState:
        raise error

    with pytest.raises(ChangeFailed) as raised:
        write_state(repository, RICH.user_id, failing)
    assert raised.value is error
    assert repository.load(RICH.user_id).account == before
    # The next successful update continues from the last stored version.
    assert write_state(repository, RICH.user_id, lambda s: s).version == 2


def test_exception_in_change_for_unknown_user_stores_nothing(
    repository: AccountRepository,
) -> None:
    def failing(state: AccountState) -> AccountState:
        raise ChangeFailed

    with pytest.raises(ChangeFailed):
        write_state(repository, "ghost", failing)
    assert repository.load("ghost").account == AccountState.new("ghost")
    assert write_state(repository, "ghost", lambda s: s).version == 1


def test_concurrent_updates_lose_nothing(repository: AccountRepository) -> None:
    threads, per_thread = 8, 15
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                write_state(repository, "counter", append_redemption(f"t{thread}-{i}"))
                repository.load("counter")
        except BaseException as exc:
            errors.append(exc)

    run_threads([threading.Thread(target=work, args=(t,)) for t in range(threads)])
    assert errors == []
    account = repository.load("counter").account
    assert account.version == threads * per_thread
    offers = [r.offer_id for r in account.redemptions]
    assert sorted(offers) == sorted(f"t{t}-{i}" for t in range(threads) for i in range(per_thread))
    for t in range(threads):  # each thread's updates are applied in its order
        mine = [o for o in offers if o.startswith(f"t{t}-")]
        assert mine == [f"t{t}-{i}" for i in range(per_thread)]
