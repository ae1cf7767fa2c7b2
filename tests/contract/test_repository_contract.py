"""The storage contract: every backend in conftest.BACKENDS must pass these unchanged.

Tests at the end (marked "sqlite only") cover what only a persistent backend has:
reopening, migrations, several repositories on one file, kill -9, lock errors, and the
faults of a database file (missing, replaced, corrupt, locked past the call's budget).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.domain.account import (
    AccountState,
    Grant,
    GrantKind,
    Household,
    HouseholdMembership,
    HouseholdRole,
    Redemption,
    Store,
    Subscription,
    SubscriptionStatus,
    UserState,
)
from storage.deadline import DeadlineExceeded, deadline_in
from storage.feed import BATCH_LIMIT, Change, ChangeFeed
from storage.repository import (
    AccountChange,
    AccountMutation,
    AccountRepository,
    Applied,
    HistoryDraft,
    HistoryEntry,
    IdempotencyConflict,
    IdempotencyKey,
    Mutation,
    StoreUnavailable,
    check_store,
)
from storage.sqlite import DatabaseNotFound, SchemaNotReady, SqliteRepository

T0 = datetime(2024, 1, 15, 9, 30, tzinfo=UTC)


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def sub(
    subscription_id: str,
    status: SubscriptionStatus = SubscriptionStatus.ACTIVE,
    store: Store = Store.WEB,
    plan_id: str = "premium_individual",
) -> Subscription:
    return Subscription(
        subscription_id=subscription_id,
        plan_id=plan_id,
        status=status,
        store=store,
        started_at=at(-30),
        current_period_end=at(30),
    )


RICH = AccountState(
    user_id="rich-user",
    version=0,
    home_market="SE",
    subscriptions=(
        Subscription(
            subscription_id="sub-grace",
            plan_id="premium_family",
            status=SubscriptionStatus.IN_GRACE_PERIOD,
            store=Store.GOOGLE_PLAY,
            started_at=at(-400),
            current_period_end=at(-1),
            grace_period_end=at(15),
            auto_renew=True,
            last_event_at=at(-1) + timedelta(microseconds=123456),
            offer_id="winback_3m",
        ),
        Subscription(
            subscription_id="sub-canceled",
            plan_id="premium_individual",
            status=SubscriptionStatus.CANCELED,
            store=Store.APP_STORE,
            started_at=at(-60),
            current_period_end=at(5),
            auto_renew=False,
        ),
        sub("sub-expired", SubscriptionStatus.EXPIRED, Store.PARTNER, "premium_duo"),
        sub("sub-trial", SubscriptionStatus.TRIALING, Store.WEB),
        sub("sub-hold", SubscriptionStatus.ON_HOLD, Store.GOOGLE_PLAY),
        sub("sub-paused", SubscriptionStatus.PAUSED, Store.GOOGLE_PLAY),
        sub("sub-revoked", SubscriptionStatus.REVOKED, Store.APP_STORE),
    ),
    grants=(
        Grant(
            grant_id="g-feature",
            kind=GrantKind.PROMOTIONAL,
            starts_at=at(-10),
            feature_id="offline_downloads",
            quota_value=30,
            expires_at=at(20),
        ),
        Grant(
            grant_id="g-plan-open-ended",
            kind=GrantKind.PARTNER,
            starts_at=at(-5),
            plan_id="premium_individual",
        ),
        Grant(
            grant_id="g-revoked",
            kind=GrantKind.SUPPORT,
            starts_at=at(-3),
            feature_id="lossless_audio",
            expires_at=at(27),
            revoked_at=at(-1),
        ),
    ),
    redemptions=(
        Redemption("trial_1m", "intro", at(-400), Store.WEB),
        Redemption("winback_3m", "winback", at(-2), Store.GOOGLE_PLAY),
        # The same offer twice: redemptions are a history, not a set.
        Redemption("trial_1m", "intro", at(-300), Store.APP_STORE),
    ),
    memberships=(
        HouseholdMembership("hh-old", HouseholdRole.MEMBER, "mgr-old", at(-300), at(-100)),
        HouseholdMembership("hh-own", HouseholdRole.MANAGER, "rich-user", at(-50)),
    ),
    student_verified_until=at(200),
)


def set_state(state: AccountState) -> AccountState:
    """A change that ignores the current state and writes `state`."""
    return state


# -- versions and basic reads/writes ------------------------------------------------------


def test_unknown_user_loads_as_version_zero_free_state(repository: AccountRepository) -> None:
    assert repository.load("nobody") == UserState(AccountState.new("nobody"), None)
    assert repository.load("nobody").account.version == 0


def test_check_passes_on_a_healthy_store(repository: AccountRepository) -> None:
    repository.check()


def test_update_bumps_version_by_exactly_one(repository: AccountRepository) -> None:
    for expected in range(1, 4):
        stored = repository.update(
            "u1", lambda s: dataclasses.replace(s, home_market=f"M{s.version}")
        )
        assert stored.version == expected
        assert stored.home_market == f"M{expected - 1}"
        assert repository.load("u1").account == stored
    assert repository.load("u1").account.version == 3


def test_change_receives_current_stored_state(repository: AccountRepository) -> None:
    first = repository.update("u1", lambda s: dataclasses.replace(s, home_market="DE"))
    seen: list[AccountState] = []

    def change(state: AccountState) -> AccountState:
        seen.append(state)
        return state

    repository.update("u1", change)
    assert seen[-1] == first


def test_update_ignores_version_and_user_id_returned_by_change(
    repository: AccountRepository,
) -> None:
    repository.update("u1", lambda s: s)
    stored = repository.update(
        "u1", lambda s: dataclasses.replace(s, user_id="someone-else", version=99)
    )
    assert stored.user_id == "u1"
    assert stored.version == 2
    assert repository.load("u1").account == stored
    assert repository.load("someone-else").account == AccountState.new("someone-else")


def test_users_are_independent(repository: AccountRepository) -> None:
    repository.update("a", lambda s: dataclasses.replace(s, home_market="SE"))
    repository.update("a", lambda s: s)
    repository.update("b", lambda s: dataclasses.replace(s, home_market="US"))
    assert repository.load("a").account == AccountState("a", version=2, home_market="SE")
    assert repository.load("b").account == AccountState("b", version=1, home_market="US")


# -- round trips ---------------------------------------------------------------------------


def test_rich_state_round_trips(repository: AccountRepository) -> None:
    stored = repository.update(RICH.user_id, lambda _: RICH)
    expected = dataclasses.replace(RICH, version=1)
    assert stored == expected
    assert repository.load(RICH.user_id).account == expected


def test_update_replaces_collections_and_clears_fields(repository: AccountRepository) -> None:
    repository.update(RICH.user_id, lambda _: RICH)
    smaller = dataclasses.replace(
        RICH,
        home_market=None,
        student_verified_until=None,
        subscriptions=(RICH.subscriptions[3], RICH.subscriptions[0]),  # reordered, fewer
        grants=RICH.grants[2:],
        redemptions=(),
        memberships=(),
    )
    repository.update(RICH.user_id, lambda _: smaller)
    assert repository.load(RICH.user_id).account == dataclasses.replace(smaller, version=2)


def test_timestamps_are_aware_and_keep_their_instant(repository: AccountRepository) -> None:
    stockholm_summer = timezone(timedelta(hours=2))
    local = datetime(2024, 6, 1, 12, 0, 0, 500, tzinfo=stockholm_summer)
    state = dataclasses.replace(AccountState.new("tz"), student_verified_until=local)
    repository.update("tz", lambda _: state)
    loaded = repository.load("tz").account.student_verified_until
    assert loaded == local
    assert loaded is not None and loaded.utcoffset() is not None
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
    stored = repository.update("prop-user", lambda _: state)
    assert stored == dataclasses.replace(state, version=stored.version)
    assert repository.load("prop-user").account == stored


# -- failed changes ------------------------------------------------------------------------


class ChangeFailed(Exception):
    pass


def test_exception_in_change_leaves_state_unchanged_and_propagates(
    repository: AccountRepository,
) -> None:
    before = repository.update(RICH.user_id, lambda _: RICH)
    error = ChangeFailed("nope")

    def failing(state: AccountState) -> AccountState:
        raise error

    with pytest.raises(ChangeFailed) as raised:
        repository.update(RICH.user_id, failing)
    assert raised.value is error
    assert repository.load(RICH.user_id).account == before
    # The next successful update continues from the last stored version.
    assert repository.update(RICH.user_id, lambda s: s).version == 2


def test_exception_in_change_for_unknown_user_stores_nothing(
    repository: AccountRepository,
) -> None:
    def failing(state: AccountState) -> AccountState:
        raise ChangeFailed

    with pytest.raises(ChangeFailed):
        repository.update("ghost", failing)
    assert repository.load("ghost").account == AccountState.new("ghost")
    assert repository.update("ghost", lambda s: s).version == 1


# -- households ----------------------------------------------------------------------------


MANAGER_SUBS = (
    sub("mgr-family", SubscriptionStatus.ACTIVE, Store.APP_STORE, "premium_family"),
    sub("mgr-old", SubscriptionStatus.EXPIRED, Store.WEB, "premium_individual"),
)


def member_of(household_id: str, manager: str, left_at: datetime | None = None) -> AccountChange:
    membership = HouseholdMembership(household_id, HouseholdRole.MEMBER, manager, at(-20), left_at)

    def change(state: AccountState) -> AccountState:
        return dataclasses.replace(state, memberships=(*state.memberships, membership))

    return change


def setup_household(repository: AccountRepository) -> None:
    manager = HouseholdMembership("hh-1", HouseholdRole.MANAGER, "manager", at(-30))
    repository.update(
        "manager",
        lambda s: dataclasses.replace(s, subscriptions=MANAGER_SUBS, memberships=(manager,)),
    )


def test_active_member_gets_household_with_managers_current_subscriptions(
    repository: AccountRepository,
) -> None:
    setup_household(repository)
    repository.update("member", member_of("hh-1", "manager"))
    assert repository.load("member").household == Household("hh-1", "manager", MANAGER_SUBS, 1)

    # The manager's subscriptions (and version) as they are now, not as they were when
    # the member joined.
    renewed = (dataclasses.replace(MANAGER_SUBS[0], current_period_end=at(60)),)
    repository.update("manager", lambda s: dataclasses.replace(s, subscriptions=renewed))
    assert repository.load("member").household == Household("hh-1", "manager", renewed, 2)


def test_member_who_left_has_no_household(repository: AccountRepository) -> None:
    setup_household(repository)
    repository.update("former", member_of("hh-1", "manager", left_at=at(-1)))
    assert repository.load("former").household is None


def test_first_current_membership_decides_the_household(repository: AccountRepository) -> None:
    setup_household(repository)
    repository.update("mover", member_of("hh-0", "old-manager", left_at=at(-10)))
    repository.update("mover", member_of("hh-1", "manager"))
    assert repository.load("mover").household == Household("hh-1", "manager", MANAGER_SUBS, 1)


def test_manager_has_no_household(repository: AccountRepository) -> None:
    setup_household(repository)
    assert repository.load("manager").household is None


def test_member_of_unknown_manager_gets_household_without_subscriptions(
    repository: AccountRepository,
) -> None:
    repository.update("orphan", member_of("hh-9", "never-seen"))
    assert repository.load("orphan").household == Household("hh-9", "never-seen", ())


# -- concurrency ---------------------------------------------------------------------------


def append_redemption(offer_id: str) -> AccountChange:
    redemption = Redemption(offer_id, "concurrency", T0, Store.WEB)

    def change(state: AccountState) -> AccountState:
        return dataclasses.replace(state, redemptions=(*state.redemptions, redemption))

    return change


def run_threads(workers: list[threading.Thread]) -> None:
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
        assert not worker.is_alive()


def test_concurrent_updates_lose_nothing(repository: AccountRepository) -> None:
    threads, per_thread = 8, 15
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                repository.update("counter", append_redemption(f"t{thread}-{i}"))
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


# -- idempotent writes (apply) and history --------------------------------------------------

RECORDED = at(1) + timedelta(microseconds=42)


def key(request_id: str, fingerprint: str = "fp-1", kind: str = "redeem") -> IdempotencyKey:
    return IdempotencyKey(kind, request_id, fingerprint)


def redeem(
    offer_id: str,
    calls: list[AccountState] | None = None,
    effective_at: datetime = T0,
    drafts: int = 1,
) -> AccountMutation:
    """Appends a redemption of `offer_id`, answers with JSON-native values (so the response
    compares equal after a round trip through JSON) and appends `drafts` history entries.
    Every call is recorded in `calls`."""
    redemption = Redemption(offer_id, "idem", effective_at, Store.WEB)

    def mutate(state: AccountState) -> Mutation:
        if calls is not None:
            calls.append(state)
        new = dataclasses.replace(state, redemptions=(*state.redemptions, redemption))
        return Mutation(
            new,
            {"offer_id": offer_id, "count": len(new.redemptions), "tags": ["a", "b"]},
            tuple(
                HistoryDraft("redemption", offer_id, effective_at, f"redeemed {offer_id} #{n}")
                for n in range(drafts)
            ),
        )

    return mutate


def redeemed(repository: AccountRepository, user_id: str) -> list[str]:
    return [r.offer_id for r in repository.load(user_id).account.redemptions]


def test_apply_writes_bumps_version_and_returns_response(repository: AccountRepository) -> None:
    calls: list[AccountState] = []
    applied = repository.apply("u1", key("r1"), redeem("o1", calls), RECORDED)
    assert calls == [AccountState.new("u1")]
    assert applied.replayed is False
    assert applied.version == 1
    assert applied.response == {"offer_id": "o1", "count": 1, "tags": ["a", "b"]}
    assert applied.state == repository.load("u1").account
    assert applied.state.version == 1
    assert redeemed(repository, "u1") == ["o1"]

    # The next write continues from the stored version, whichever way it is written.
    repository.update("u1", lambda s: s)
    second = repository.apply("u1", key("r2"), redeem("o2", calls), RECORDED)
    assert calls[-1] == dataclasses.replace(applied.state, version=2)
    assert (second.version, second.state.version, second.replayed) == (3, 3, False)
    assert redeemed(repository, "u1") == ["o1", "o2"]


def test_apply_ignores_version_and_user_id_returned_by_mutate(
    repository: AccountRepository,
) -> None:
    def mutate(state: AccountState) -> Mutation:
        return Mutation(dataclasses.replace(state, user_id="other", version=99), {"ok": True})

    applied = repository.apply("u1", key("r1"), mutate, RECORDED)
    assert (applied.state.user_id, applied.state.version, applied.version) == ("u1", 1, 1)
    assert repository.load("other").account == AccountState.new("other")


def test_apply_replay_returns_original_answer_without_writing(
    repository: AccountRepository,
) -> None:
    first = repository.apply("u1", key("r1"), redeem("o1"), RECORDED)
    history = repository.history("u1")
    calls: list[AccountState] = []
    replay = repository.apply("u1", key("r1"), redeem("o1", calls), RECORDED + timedelta(1))
    assert calls == []
    assert replay == Applied(first.state, 1, first.response, replayed=True)
    assert repository.load("u1").account == first.state
    assert repository.history("u1") == history
    # Nothing was written, so the next write is version 2.
    assert repository.update("u1", lambda s: s).version == 2


def test_apply_replay_returns_current_state_with_original_version(
    repository: AccountRepository,
) -> None:
    first = repository.apply("u1", key("r1"), redeem("o1"), RECORDED)
    later = repository.apply("u1", key("r2"), redeem("o2"), RECORDED)
    replay = repository.apply("u1", key("r1"), redeem("o1"), RECORDED)
    assert replay.replayed is True
    assert replay.state == later.state == repository.load("u1").account
    assert (replay.version, replay.response) == (1, first.response)


def test_apply_with_reused_id_and_other_fingerprint_conflicts(
    repository: AccountRepository,
) -> None:
    first = repository.apply("u1", key("r1", "fp-1"), redeem("o1"), RECORDED)
    history = repository.history("u1")
    calls: list[AccountState] = []
    with pytest.raises(IdempotencyConflict):
        repository.apply("u1", key("r1", "fp-2"), redeem("other", calls), RECORDED)
    assert calls == []
    assert repository.load("u1").account == first.state
    assert repository.history("u1") == history
    # The original request is still answered, and the conflicting one still conflicts.
    assert repository.apply("u1", key("r1", "fp-1"), redeem("o1"), RECORDED).replayed is True
    with pytest.raises(IdempotencyConflict):
        repository.apply("u1", key("r1", "fp-2"), redeem("other"), RECORDED)
    assert repository.update("u1", lambda s: s).version == 2


def test_same_id_under_another_kind_is_another_request(repository: AccountRepository) -> None:
    grant = repository.apply("u1", key("id-1", kind="grant"), redeem("o1"), RECORDED)
    revoke = repository.apply("u1", key("id-1", "fp-9", kind="revoke"), redeem("o2"), RECORDED)
    assert (grant.replayed, grant.version) == (False, 1)
    assert (revoke.replayed, revoke.version) == (False, 2)
    assert repository.apply("u1", key("id-1", kind="grant"), redeem("o1"), RECORDED) == Applied(
        revoke.state, 1, grant.response, replayed=True
    )
    assert repository.apply(
        "u1", key("id-1", "fp-9", kind="revoke"), redeem("o2"), RECORDED
    ) == Applied(revoke.state, 2, revoke.response, replayed=True)


def test_idempotency_keys_are_per_user(repository: AccountRepository) -> None:
    a = repository.apply("a", key("r1"), redeem("o1"), RECORDED)
    b = repository.apply("b", key("r1", "fp-other"), redeem("o2"), RECORDED)
    assert (a.replayed, a.version, b.replayed, b.version) == (False, 1, False, 1)
    assert redeemed(repository, "a") == ["o1"]
    assert redeemed(repository, "b") == ["o2"]
    assert [e.reference for e in repository.history("a")] == ["o1"]
    assert [e.reference for e in repository.history("b")] == ["o2"]


def test_exception_in_mutate_propagates_and_keeps_no_key_and_no_history(
    repository: AccountRepository,
) -> None:
    before = repository.apply("u1", key("r0"), redeem("o0"), RECORDED)
    history = repository.history("u1")
    error = ChangeFailed("nope")

    def failing(state: AccountState) -> Mutation:
        raise error

    with pytest.raises(ChangeFailed) as raised:
        repository.apply("u1", key("r1"), failing, RECORDED)
    assert raised.value is error
    assert repository.load("u1").account == before.state
    assert repository.history("u1") == history

    # The key was not kept: the same request runs again and writes this time.
    calls: list[AccountState] = []
    retried = repository.apply("u1", key("r1"), redeem("o1", calls), RECORDED)
    assert calls == [before.state]
    assert (retried.replayed, retried.version) == (False, 2)


def test_exception_in_mutate_for_unknown_user_stores_nothing(
    repository: AccountRepository,
) -> None:
    def failing(state: AccountState) -> Mutation:
        raise ChangeFailed

    with pytest.raises(ChangeFailed):
        repository.apply("ghost", key("r1"), failing, RECORDED)
    assert repository.load("ghost").account == AccountState.new("ghost")
    assert repository.history("ghost") == []
    assert repository.apply("ghost", key("r1"), redeem("o1"), RECORDED).version == 1


def test_history_is_appended_in_order_with_version_and_recorded_at(
    repository: AccountRepository,
) -> None:
    plus_two = timezone(timedelta(hours=2))
    effective = datetime(2024, 3, 1, 8, 0, 0, 7, tzinfo=plus_two)
    # Neither effective nor recording times follow the order of the writes: history is in
    # the order it was appended.
    recorded = [RECORDED + timedelta(hours=n) for n in (2, 0, 3, 1)]
    repository.apply("u1", key("r1"), redeem("o1", effective_at=effective, drafts=2), recorded[0])
    repository.update("u1", lambda s: s)  # version 2, no history
    repository.apply("u1", key("r3"), redeem("o3", drafts=0), recorded[1])  # no history
    repository.apply("u1", key("r4"), redeem("o4", effective_at=at(100)), recorded[2])
    repository.apply("u1", key("r1"), redeem("o1"), recorded[3])  # a replay: no history
    repository.apply("u1", key("r5"), redeem("o5", effective_at=at(-100)), recorded[3])
    repository.apply("other", key("r1"), redeem("o-other"), recorded[3])

    history = repository.history("u1")
    assert history == [
        HistoryEntry("redemption", "o1", effective, recorded[0], 1, "redeemed o1 #0"),
        HistoryEntry("redemption", "o1", effective, recorded[0], 1, "redeemed o1 #1"),
        HistoryEntry("redemption", "o4", at(100), recorded[2], 4, "redeemed o4 #0"),
        HistoryEntry("redemption", "o5", at(-100), recorded[3], 5, "redeemed o5 #0"),
    ]
    assert history[0].effective_at.utcoffset() is not None
    assert history[0].recorded_at.utcoffset() is not None
    assert [e.reference for e in repository.history("other")] == ["o-other"]
    # A copy: changing the list returned does not change the store.
    history.clear()
    assert len(repository.history("u1")) == 4


def test_history_of_unknown_user_is_empty(repository: AccountRepository) -> None:
    assert repository.history("nobody") == []
    repository.update("updated-only", lambda s: s)
    assert repository.history("updated-only") == []


def test_apply_and_update_interleave_with_consistent_versions(
    repository: AccountRepository,
) -> None:
    assert repository.apply("u1", key("r1"), redeem("o1"), RECORDED).version == 1
    assert repository.update("u1", append_redemption("u2")).version == 2
    assert repository.apply("u1", key("r3"), redeem("o3"), RECORDED).version == 3
    replay = repository.apply("u1", key("r1"), redeem("o1"), RECORDED)
    assert (replay.replayed, replay.version, replay.state.version) == (True, 1, 3)
    assert repository.update("u1", append_redemption("u4")).version == 4
    assert repository.apply("u1", key("r5"), redeem("o5"), RECORDED).version == 5
    assert redeemed(repository, "u1") == ["o1", "u2", "o3", "u4", "o5"]
    assert [e.version for e in repository.history("u1")] == [1, 3, 5]


def test_keys_and_history_survive_later_updates_of_the_state(
    repository: AccountRepository,
) -> None:
    first = repository.apply(RICH.user_id, key("r1"), redeem("o1"), RECORDED)
    history = repository.history(RICH.user_id)
    # Rewriting the whole state, then emptying it, keeps what is not part of the state.
    repository.update(RICH.user_id, lambda _: RICH)
    repository.update(RICH.user_id, lambda _: AccountState.new(RICH.user_id))
    assert repository.history(RICH.user_id) == history
    calls: list[AccountState] = []
    replay = repository.apply(RICH.user_id, key("r1"), redeem("o1", calls), RECORDED)
    assert calls == []
    assert (replay.replayed, replay.version, replay.response) == (True, 1, first.response)
    with pytest.raises(IdempotencyConflict):
        repository.apply(RICH.user_id, key("r1", "fp-2"), redeem("o1"), RECORDED)


def unchanged(
    response: dict[str, object], calls: list[AccountState] | None = None
) -> AccountMutation:
    """A write that changes nothing (Mutation state None), answering `response`."""

    def mutate(state: AccountState) -> Mutation:
        if calls is not None:
            calls.append(state)
        return Mutation.unchanged(response)

    return mutate


def test_a_write_that_changes_nothing_keeps_its_key_at_the_current_version(
    repository: AccountRepository,
) -> None:
    repository.apply("u1", key("r1"), redeem("o1"), RECORDED)
    current = repository.update("u1", append_redemption("u2"))  # version 2
    history = repository.history("u1")
    calls: list[AccountState] = []
    applied = repository.apply("u1", key("r2"), unchanged({"same": [1, 2]}, calls), RECORDED)
    assert calls == [current]
    assert applied == Applied(current, 2, {"same": [1, 2]}, replayed=False)
    # Nothing written: no state, no version, no history.
    assert repository.load("u1").account == current
    assert repository.history("u1") == history
    # The key was kept with its response and that version: a retry replays it...
    calls.clear()
    replay = repository.apply("u1", key("r2"), unchanged({"other": 0}, calls), RECORDED)
    assert calls == []
    assert replay == Applied(current, 2, {"same": [1, 2]}, replayed=True)
    # ...a reused id with other content conflicts...
    with pytest.raises(IdempotencyConflict):
        repository.apply("u1", key("r2", "fp-2"), redeem("o3"), RECORDED)
    # ...and the next write that changes something is the next version, still replayed
    # afterwards with the version of the unchanged write.
    assert repository.apply("u1", key("r3"), redeem("o3"), RECORDED).version == 3
    later = repository.apply("u1", key("r2"), unchanged({}), RECORDED)
    assert (later.replayed, later.version, later.state.version) == (True, 2, 3)
    assert [e.version for e in repository.history("u1")] == [1, 3]
    assert repository.update("u1", lambda s: s).version == 4


def test_writes_that_change_nothing_never_move_the_version(
    repository: AccountRepository,
) -> None:
    first = repository.apply("u1", key("r0"), redeem("o0"), RECORDED)
    results = [
        repository.apply("u1", key(f"r{n}", kind="revoke"), unchanged({"n": n}), RECORDED)
        for n in range(1, 4)
    ]
    assert [(r.version, r.replayed, r.response) for r in results] == [
        (1, False, {"n": n}) for n in range(1, 4)
    ]
    assert all(r.state == first.state for r in results)
    assert repository.load("u1").account == first.state
    assert [e.version for e in repository.history("u1")] == [1]


def test_concurrent_writes_that_change_nothing_all_land_at_one_version(
    repository: AccountRepository,
) -> None:
    repository.apply("hot", key("r0"), redeem("o0"), RECORDED)
    count = 8
    results = run_appliers(
        count, lambda i: repository.apply("hot", key(f"n{i}"), unchanged({"i": i}), RECORDED)
    )
    assert sorted((r.version, r.replayed) for r in results) == [(1, False)] * count
    assert repository.load("hot").account.version == 1
    for i in range(count):
        assert repository.apply("hot", key(f"n{i}"), unchanged({}), RECORDED).response == {"i": i}
    assert len(repository.history("hot")) == 1


def test_a_write_that_changes_nothing_for_an_unknown_user_stores_version_one(
    repository: AccountRepository,
) -> None:
    # The user has no row to keep the key with: their unchanged state is stored.
    applied = repository.apply("ghost", key("r1"), unchanged({"ok": True}), RECORDED)
    assert applied == Applied(
        dataclasses.replace(AccountState.new("ghost"), version=1), 1, {"ok": True}, False
    )
    assert repository.load("ghost").account == applied.state
    assert repository.history("ghost") == []
    assert repository.apply("ghost", key("r1"), unchanged({}), RECORDED) == Applied(
        applied.state, 1, {"ok": True}, replayed=True
    )


def test_a_write_that_changes_nothing_appends_no_history() -> None:
    draft = HistoryDraft("revoke", "g1", T0, "revoked")
    with pytest.raises(ValueError, match="no history"):
        Mutation(None, {}, (draft,))
    assert Mutation.unchanged({"a": 1}) == Mutation(None, {"a": 1}, ())


def run_appliers(count: int, apply_one: Callable[[int], Applied]) -> list[Applied]:
    barrier = threading.Barrier(count)
    results: list[Applied] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        try:
            barrier.wait()
            applied = apply_one(index)
            with lock:
                results.append(applied)
        except BaseException as exc:
            errors.append(exc)

    run_threads([threading.Thread(target=work, args=(i,)) for i in range(count)])
    assert errors == []
    return results


def test_concurrent_applies_with_distinct_keys_all_land(repository: AccountRepository) -> None:
    count = 16
    results = run_appliers(
        count, lambda i: repository.apply("hot", key(f"r{i}"), redeem(f"o{i}"), RECORDED)
    )
    assert all(not r.replayed for r in results)
    assert sorted(r.version for r in results) == list(range(1, count + 1))
    account = repository.load("hot").account
    assert account.version == count
    assert sorted(redeemed(repository, "hot")) == sorted(f"o{i}" for i in range(count))
    history = repository.history("hot")
    assert [e.version for e in history] == list(range(1, count + 1))
    by_version = {r.version: r.response["offer_id"] for r in results}
    assert [e.reference for e in history] == [by_version[v] for v in range(1, count + 1)]


def test_concurrent_applies_of_one_request_write_once(repository: AccountRepository) -> None:
    count = 16
    results = run_appliers(
        count, lambda _: repository.apply("hot", key("same"), redeem("o1"), RECORDED)
    )
    assert sorted(r.replayed for r in results) == [False] + [True] * (count - 1)
    assert {r.version for r in results} == {1}
    assert all(r.response == results[0].response for r in results)
    assert repository.load("hot").account.version == 1
    assert redeemed(repository, "hot") == ["o1"]
    assert len(repository.history("hot")) == 1


# -- the change feed (storage.feed) --------------------------------------------------------


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
    repository.update("a", lambda s: s)
    repository.apply("b", key("r1"), redeem("o1"), RECORDED)
    repository.update("a", lambda s: s)
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
        repository.update("b", failing)
    assert feed.read_changes(start).changes == ()


def test_a_managers_write_publishes_the_members_of_the_household(
    repository: AccountRepository,
) -> None:
    feed = feed_of(repository)
    seat = HouseholdMembership("hh-1", HouseholdRole.MANAGER, "manager", at(-30), None, "m1")
    start = feed.feed_position()
    repository.update("manager", lambda s: dataclasses.replace(s, memberships=(seat,)))
    # The seat released: the member who left must drop the household too.
    left = dataclasses.replace(seat, left_at=at(-1))
    repository.update("manager", lambda s: dataclasses.replace(s, memberships=(left,)))
    repository.update("manager", lambda s: dataclasses.replace(s, memberships=()))
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
        assert versions == sorted(versions) and 0 not in versions


def test_a_healthy_store_passes_the_readiness_probe(repository: AccountRepository) -> None:
    repository.update("u", lambda s: s)
    check_store(repository)
    check_store(repository, writable=True)  # a backend that cannot tell: reads only
    assert repository.load("u").account.version == 1


# -- sqlite only ---------------------------------------------------------------------------


def migration_rows(path: Path) -> list[tuple[int, str]]:
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        return [(int(v), str(n)) for v, n in rows]
    finally:
        connection.close()


def migration_files() -> list[str]:
    directory = Path(sys.modules[SqliteRepository.__module__].__file__ or "").parent
    return sorted(p.stem for p in (directory / "migrations").glob("*.sql"))


def test_sqlite_state_survives_close_and_reopen(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    repo.update(RICH.user_id, lambda _: RICH)
    repo.close()
    with pytest.raises(StoreUnavailable):
        repo.load(RICH.user_id)

    reopened = SqliteRepository(sqlite_path)
    try:
        assert reopened.load(RICH.user_id).account == dataclasses.replace(RICH, version=1)
        assert reopened.update(RICH.user_id, lambda s: s).version == 2
    finally:
        reopened.close()


def test_sqlite_migrations_are_applied_once(sqlite_path: Path) -> None:
    SqliteRepository(sqlite_path).close()
    first = migration_rows(sqlite_path)
    assert [name for _, name in first] == migration_files()
    assert first[0] == (1, "0001_initial")

    for _ in range(2):
        SqliteRepository(sqlite_path).close()
    assert migration_rows(sqlite_path) == first


def test_sqlite_concurrent_openers_apply_each_migration_once(sqlite_path: Path) -> None:
    openers = 6
    barrier = threading.Barrier(openers)
    repos: list[SqliteRepository] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def open_repo() -> None:
        try:
            barrier.wait()
            repo = SqliteRepository(sqlite_path)
            with lock:
                repos.append(repo)
        except BaseException as exc:
            errors.append(exc)

    run_threads([threading.Thread(target=open_repo) for _ in range(openers)])
    try:
        assert errors == []
        assert [name for _, name in migration_rows(sqlite_path)] == migration_files()
        repos[0].update("u", lambda s: dataclasses.replace(s, home_market="NO"))
        assert all(r.load("u").account.home_market == "NO" for r in repos)
    finally:
        for repo in repos:
            repo.close()


_OPEN_AND_UPDATE_SCRIPT = """
import sys
from storage.sqlite import SqliteRepository
sys.stdin.read()  # wait until every process is started
repo = SqliteRepository(sys.argv[1])
repo.update("u", lambda s: s)
repo.close()
"""


def test_sqlite_concurrent_processes_open_a_new_file(sqlite_path: Path) -> None:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_AND_UPDATE_SCRIPT, str(sqlite_path)],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    for process in processes:
        assert process.stdin is not None
        process.stdin.close()
    for process in processes:
        assert process.wait(timeout=60) == 0, process.stderr.read() if process.stderr else ""
        if process.stderr:
            process.stderr.close()
    assert [name for _, name in migration_rows(sqlite_path)] == migration_files()
    repo = SqliteRepository(sqlite_path)
    try:
        assert repo.load("u").account.version == len(processes)
    finally:
        repo.close()


def test_sqlite_waits_for_a_writer_before_switching_a_new_file_to_wal(
    sqlite_path: Path,
) -> None:
    # Another process holds the write lock while the file is still in rollback mode: the
    # switch to WAL fails at once without the busy handler and must be retried.
    sqlite_path.parent.mkdir(parents=True)
    blocker = sqlite3.connect(sqlite_path, isolation_level=None, check_same_thread=False)
    blocker.execute("CREATE TABLE unrelated (x INTEGER)")
    blocker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.1, lambda: blocker.execute("ROLLBACK"))
    release.start()
    try:
        repo = SqliteRepository(sqlite_path, busy_timeout_ms=3000)
        repo.close()
    finally:
        release.join()
        blocker.close()
    assert [name for _, name in migration_rows(sqlite_path)] == migration_files()


def test_sqlite_database_is_in_wal_mode(sqlite_path: Path) -> None:
    SqliteRepository(sqlite_path).close()
    connection = sqlite3.connect(sqlite_path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        connection.close()


def test_sqlite_two_repositories_on_one_file_see_each_others_writes(sqlite_path: Path) -> None:
    one, two = SqliteRepository(sqlite_path), SqliteRepository(sqlite_path)
    try:
        one.update("shared", append_redemption("from-one"))
        assert [r.offer_id for r in two.load("shared").account.redemptions] == ["from-one"]
        two.update("shared", append_redemption("from-two"))
        account = one.load("shared").account
        assert account.version == 2
        assert [r.offer_id for r in account.redemptions] == ["from-one", "from-two"]

        # Both writing at once, as two processes would.
        errors: list[BaseException] = []

        def work(repo: SqliteRepository, name: str) -> None:
            try:
                for i in range(10):
                    repo.update("shared", append_redemption(f"{name}-{i}"))
            except BaseException as exc:
                errors.append(exc)

        run_threads(
            [
                threading.Thread(target=work, args=(one, "one")),
                threading.Thread(target=work, args=(two, "two")),
            ]
        )
        assert errors == []
        assert one.load("shared").account.version == 22
        assert len(two.load("shared").account.redemptions) == 22
    finally:
        one.close()
        two.close()


_KILL_SCRIPT = """
import dataclasses, os, signal, sys
from storage.sqlite import SqliteRepository
repo = SqliteRepository(sys.argv[1])
stored = repo.update("durable", lambda s: dataclasses.replace(s, home_market="FI"))
print(stored.version, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sqlite_acknowledged_write_survives_kill_9(sqlite_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, str(sqlite_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert result.stdout.strip() == "1"
    repo = SqliteRepository(sqlite_path)
    try:
        account = repo.load("durable").account
        assert (account.version, account.home_market) == (1, "FI")
    finally:
        repo.close()


def test_sqlite_locked_database_is_store_unavailable(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path, busy_timeout_ms=50)
    repo.update("u", lambda s: dataclasses.replace(s, home_market="SE"))
    blocker = sqlite3.connect(sqlite_path, isolation_level=None)
    calls: list[AccountState] = []

    def change(state: AccountState) -> AccountState:
        calls.append(state)
        return state

    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable):
            repo.update("u", change)
        assert calls == []
        # WAL: readers are not blocked by a writer.
        assert repo.load("u").account.version == 1
        blocker.execute("ROLLBACK")
        assert repo.update("u", change).version == 2
    finally:
        blocker.close()
        repo.close()


def test_sqlite_unopenable_path_is_store_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        SqliteRepository(tmp_path)  # a directory, not a database file


def test_sqlite_check_fails_after_close(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    repo.check()
    repo.close()
    with pytest.raises(StoreUnavailable):
        repo.check()


def test_sqlite_rejects_naive_timestamps(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    try:
        naive = dataclasses.replace(
            AccountState.new("u"), student_verified_until=datetime(2024, 1, 1)
        )
        with pytest.raises(ValueError, match="naive"):
            repo.update("u", lambda _: naive)
        assert repo.load("u").account == AccountState.new("u")
    finally:
        repo.close()


def test_sqlite_stores_utc_iso_text(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    try:
        plus_two = datetime(2024, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
        repo.update("u", lambda s: dataclasses.replace(s, student_verified_until=plus_two))
    finally:
        repo.close()
    connection = sqlite3.connect(sqlite_path)
    try:
        row = connection.execute("SELECT student_verified_until FROM users").fetchone()
    finally:
        connection.close()
    assert row == ("2024-06-01T10:00:00.000000+00:00",)


def test_sqlite_keys_and_history_survive_close_and_reopen(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    first = repo.apply("u1", key("r1"), redeem("o1", drafts=2), RECORDED)
    history = repo.history("u1")
    assert len(history) == 2
    repo.close()

    reopened = SqliteRepository(sqlite_path)
    try:
        assert reopened.history("u1") == history
        calls: list[AccountState] = []
        replay = reopened.apply("u1", key("r1"), redeem("o1", calls), RECORDED)
        assert calls == []
        assert replay == Applied(first.state, 1, first.response, replayed=True)
        with pytest.raises(IdempotencyConflict):
            reopened.apply("u1", key("r1", "fp-2"), redeem("o1"), RECORDED)
        reopened.update("u1", lambda _: AccountState.new("u1"))
        assert reopened.apply("u1", key("r1"), redeem("o1"), RECORDED).replayed is True
        assert reopened.history("u1") == history
    finally:
        reopened.close()


def test_sqlite_two_repositories_on_one_file_see_each_others_keys(sqlite_path: Path) -> None:
    one, two = SqliteRepository(sqlite_path), SqliteRepository(sqlite_path)
    try:
        first = one.apply("shared", key("r1"), redeem("o1"), RECORDED)
        calls: list[AccountState] = []
        assert two.apply("shared", key("r1"), redeem("o1", calls), RECORDED) == Applied(
            first.state, 1, first.response, replayed=True
        )
        assert calls == []
        with pytest.raises(IdempotencyConflict):
            two.apply("shared", key("r1", "fp-2"), redeem("o1"), RECORDED)
        assert two.apply("shared", key("r2"), redeem("o2"), RECORDED).version == 2
        assert one.apply("shared", key("r2"), redeem("o2"), RECORDED).replayed is True
        assert one.history("shared") == two.history("shared")
        assert [e.version for e in one.history("shared")] == [1, 2]
    finally:
        one.close()
        two.close()


_APPLY_SCRIPT = """
import dataclasses, json, sys
from datetime import UTC, datetime
from storage.repository import HistoryDraft, IdempotencyKey, Mutation
from storage.sqlite import SqliteRepository

def mutate(state):
    return Mutation(
        dataclasses.replace(state, home_market="FI"),
        {"from": "child", "version_seen": state.version},
        (HistoryDraft("grant", "g-1", datetime(2024, 1, 1, tzinfo=UTC), "granted g-1"),),
    )

repo = SqliteRepository(sys.argv[1])
applied = repo.apply("u", IdempotencyKey("grant", "g-1", "fp-1"), mutate, datetime.now(UTC))
print(json.dumps([applied.version, applied.replayed, applied.response]), flush=True)
repo.close()
"""


def test_sqlite_replay_is_detected_across_processes(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)  # open before the other process writes
    try:
        repo.update("u", lambda s: s)
        result = subprocess.run(
            [sys.executable, "-c", _APPLY_SCRIPT, str(sqlite_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        version, replayed, response = json.loads(result.stdout)
        assert (version, replayed) == (2, False)

        calls: list[AccountState] = []
        grant_key = IdempotencyKey("grant", "g-1", "fp-1")
        replay = repo.apply("u", grant_key, redeem("never", calls), RECORDED)
        assert calls == []
        assert (replay.replayed, replay.version, replay.response) == (True, 2, response)
        assert replay.state.home_market == "FI"
        assert [(e.kind, e.reference, e.version) for e in repo.history("u")] == [
            ("grant", "g-1", 2)
        ]
        with pytest.raises(IdempotencyConflict):
            repo.apply(
                "u", dataclasses.replace(grant_key, fingerprint="fp-2"), redeem("x"), RECORDED
            )
    finally:
        repo.close()


def test_sqlite_apply_stores_json_response_and_utc_history(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    plus_two = timezone(timedelta(hours=2))
    effective = datetime(2024, 6, 1, 12, 0, tzinfo=plus_two)
    recorded = datetime(2024, 6, 2, 12, 0, tzinfo=plus_two)

    def mutate(state: AccountState) -> Mutation:
        # A tuple and unsorted keys: stored as canonical JSON, answered as the replay is.
        return Mutation(
            state,
            {"z": (1, 2), "a": {"y": None, "b": "ü"}},
            (HistoryDraft("grant", "g-1", effective, "granted"),),
        )

    try:
        first = repo.apply("u", key("r1"), mutate, recorded)
        replay = repo.apply("u", key("r1"), mutate, recorded)
        assert first.response == replay.response == {"a": {"b": "ü", "y": None}, "z": [1, 2]}
    finally:
        repo.close()
    connection = sqlite3.connect(sqlite_path)
    try:
        request = connection.execute(
            "SELECT kind, request_id, fingerprint, response, version, recorded_at"
            " FROM processed_requests"
        ).fetchall()
        history = connection.execute(
            "SELECT user_id, effective_at, recorded_at, version FROM history"
        ).fetchall()
    finally:
        connection.close()
    assert len(request) == 1
    kind, request_id, fingerprint, response, version, recorded_text = request[0]
    assert (kind, request_id, fingerprint, version) == ("redeem", "r1", "fp-1", 1)
    assert response == json.dumps(json.loads(response), sort_keys=True, separators=(",", ":"))
    assert recorded_text == "2024-06-02T10:00:00.000000+00:00"
    assert history == [
        ("u", "2024-06-01T10:00:00.000000+00:00", "2024-06-02T10:00:00.000000+00:00", 1)
    ]


def test_sqlite_apply_rejects_what_it_cannot_store_and_writes_nothing(
    sqlite_path: Path,
) -> None:
    repo = SqliteRepository(sqlite_path)
    try:
        with pytest.raises(ValueError, match="naive"):
            repo.apply("u", key("r1"), redeem("o1"), datetime(2024, 1, 1))
        with pytest.raises(ValueError, match="naive"):
            repo.apply("u", key("r1"), redeem("o1", effective_at=datetime(2024, 1, 1)), RECORDED)

        def not_json(state: AccountState) -> Mutation:
            return Mutation(state, {"when": T0})

        with pytest.raises(TypeError):
            repo.apply("u", key("r1"), not_json, RECORDED)
        assert repo.load("u").account == AccountState.new("u")
        assert repo.history("u") == []
        assert repo.apply("u", key("r1"), redeem("o1"), RECORDED) == Applied(
            repo.load("u").account, 1, {"offer_id": "o1", "count": 1, "tags": ["a", "b"]}, False
        )
    finally:
        repo.close()


def test_sqlite_database_from_before_0002_is_migrated_keeping_its_data(
    sqlite_path: Path,
) -> None:
    repo = SqliteRepository(sqlite_path)
    repo.update(RICH.user_id, lambda _: RICH)
    repo.close()
    # Make it look like a database only 0001 was applied to.
    connection = sqlite3.connect(sqlite_path, isolation_level=None)
    try:
        connection.execute("DROP TABLE history")
        connection.execute("DROP TABLE processed_requests")
        connection.execute("ALTER TABLE household_memberships DROP COLUMN member_user_id")
        connection.execute("DROP TABLE user_changes")
        connection.execute("DELETE FROM schema_migrations WHERE version >= 2")
    finally:
        connection.close()
    assert [name for _, name in migration_rows(sqlite_path)] == ["0001_initial"]

    repo = SqliteRepository(sqlite_path)
    try:
        assert [name for _, name in migration_rows(sqlite_path)] == migration_files()
        assert repo.load(RICH.user_id).account == dataclasses.replace(RICH, version=1)
        assert repo.history(RICH.user_id) == []
        assert repo.apply(RICH.user_id, key("r1"), redeem("o1"), RECORDED).version == 2
    finally:
        repo.close()


# -- sqlite only: the database file and its faults -----------------------------------------


def test_sqlite_without_create_opens_an_existing_database_only(sqlite_path: Path) -> None:
    with pytest.raises(DatabaseNotFound, match="entitlements migrate"):
        SqliteRepository(sqlite_path, create=False)
    assert not sqlite_path.parent.exists()  # nothing created, not even the directory

    SqliteRepository(sqlite_path, create=True).close()
    repo = SqliteRepository(sqlite_path, create=False)
    try:
        assert repo.update("u", lambda s: s).version == 1
    finally:
        repo.close()


def test_sqlite_without_create_needs_every_migration(sqlite_path: Path) -> None:
    sqlite_path.parent.mkdir(parents=True)
    sqlite_path.touch()  # an empty file is an empty database: no schema at all
    with pytest.raises(SchemaNotReady, match="0001_initial"):
        SqliteRepository(sqlite_path, create=False)

    created = SqliteRepository(sqlite_path, create=True)
    assert list(created.applied_migrations) == migration_files()
    created.close()
    connection = sqlite3.connect(sqlite_path, isolation_level=None)
    try:
        connection.execute("DELETE FROM schema_migrations WHERE version = 2")
    finally:
        connection.close()
    with pytest.raises(SchemaNotReady, match="0002_write_path"):
        SqliteRepository(sqlite_path, create=False)


def file_modes(path: Path) -> dict[str, int]:
    return {
        file.name: stat.S_IMODE(file.stat().st_mode)
        for file in path.parent.iterdir()
        if file.name.startswith(path.name)
    }


def test_sqlite_creates_a_private_database_file(sqlite_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        repo = SqliteRepository(sqlite_path)
        repo.update("u", lambda s: s)
    finally:
        os.umask(previous)
    try:
        assert file_modes(sqlite_path) == {
            sqlite_path.name: 0o600,
            f"{sqlite_path.name}-wal": 0o600,
            f"{sqlite_path.name}-shm": 0o600,
        }
    finally:
        repo.close()


@pytest.mark.parametrize("operation", ["update", "apply"])
def test_sqlite_waits_for_a_lock_no_longer_than_the_call_budget(
    sqlite_path: Path, operation: str
) -> None:
    repo = SqliteRepository(sqlite_path)  # busy timeout: the default 5 s
    calls: list[AccountState] = []

    def write() -> object:
        if operation == "update":
            return repo.update("u", lambda s: calls.append(s) or s)  # type: ignore[func-returns-value]
        return repo.apply("u", key("r1"), redeem("o1", calls), RECORDED)

    blocker = sqlite3.connect(sqlite_path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with deadline_in(0.3), pytest.raises(DeadlineExceeded):
            write()
        assert 0.25 < time.monotonic() - started < 0.3 + 0.3
        assert calls == []
        # A budget spent before the call: no waiting at all.
        with deadline_in(0.01):
            time.sleep(0.02)
            with pytest.raises(DeadlineExceeded):
                write()
        blocker.execute("ROLLBACK")
        with deadline_in(0.3):
            write()
        assert repo.load("u").account.version == 1
    finally:
        blocker.close()
        repo.close()


def test_sqlite_waits_for_a_lock_up_to_the_busy_timeout_without_a_budget(
    sqlite_path: Path,
) -> None:
    repo = SqliteRepository(sqlite_path, busy_timeout_ms=200)
    blocker = sqlite3.connect(sqlite_path, isolation_level=None, check_same_thread=False)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.1, lambda: blocker.execute("ROLLBACK"))
        release.start()
        assert repo.update("u", lambda s: s).version == 1  # waited for the lock
        release.join()
        blocker.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="locked"):
            repo.update("u", lambda s: s)
        assert 0.15 < time.monotonic() - started < 0.2 + 0.3
        with deadline_in(2.0), pytest.raises(StoreUnavailable):
            repo.update("u", lambda s: s)  # the busy timeout is the longer wait's cap
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()
        repo.close()


def test_sqlite_deleted_database_is_unavailable_until_restored(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    try:
        repo.update("kept", lambda s: dataclasses.replace(s, home_market="SE"))
        backup = sqlite_path.with_name("backup.db")
        with sqlite3.connect(sqlite_path) as source, sqlite3.connect(backup) as copy:
            source.backup(copy)
        for path in sqlite_path.parent.glob(f"{sqlite_path.name}*"):
            path.unlink()  # the connection still holds the unlinked file

        calls: list[AccountState] = []
        with pytest.raises(DatabaseNotFound):
            repo.apply("lost", key("r1"), redeem("o1", calls), RECORDED)
        with pytest.raises(DatabaseNotFound):
            repo.load("kept")
        with pytest.raises(DatabaseNotFound):
            repo.check()
        with pytest.raises(DatabaseNotFound):
            repo.check_writable()
        assert calls == []
        assert not sqlite_path.exists()  # not created again

        shutil.copyfile(backup, sqlite_path)  # restored: followed without reopening
        repo.check_writable()
        assert repo.load("kept").account.home_market == "SE"
        assert repo.apply("lost", key("r1"), redeem("o1"), RECORDED).version == 1
    finally:
        repo.close()


def test_sqlite_database_replaced_by_a_foreign_file_is_unavailable(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    try:
        repo.update("u", lambda s: s)
        foreign = sqlite_path.with_name("foreign.db")
        sqlite3.connect(foreign).close()
        for path in sqlite_path.parent.glob(f"{sqlite_path.name}*"):
            path.unlink()
        foreign.rename(sqlite_path)
        with pytest.raises(StoreUnavailable, match="no such table"):
            repo.load("u")
        with pytest.raises(StoreUnavailable):
            repo.update("u", lambda s: s)
    finally:
        repo.close()


def test_sqlite_corrupt_database_is_unavailable(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    try:
        for i in range(500):
            repo.update(f"user-{i:04d}", lambda s: dataclasses.replace(s, home_market="SE"))
        connection = sqlite3.connect(sqlite_path)
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.close()
        with sqlite_path.open("r+b") as file:  # every page but the first few: garbage
            file.seek(8 * 4096)
            file.write(b"\xff" * (sqlite_path.stat().st_size - 8 * 4096))
        failures = 0
        for i in range(0, 500, 25):
            try:
                repo.load(f"user-{i:04d}")
            except StoreUnavailable as error:
                assert "malformed" in str(error) or "not a database" in str(error)
                failures += 1
        assert failures > 0
        with pytest.raises(StoreUnavailable):
            repo.update("user-0000", lambda s: s)
    finally:
        repo.close()


def test_sqlite_check_writable(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    blocker = sqlite3.connect(sqlite_path, isolation_level=None)
    try:
        repo.check_writable()
        blocker.execute("BEGIN IMMEDIATE")
        repo.check_writable()  # the lock held elsewhere: contention, not a fault
        blocker.execute("ROLLBACK")
        with sqlite3.connect(sqlite_path) as reader:  # wrote nothing
            assert reader.execute("SELECT count(*) FROM users").fetchone() == (0,)
    finally:
        blocker.close()
        repo.close()
    with pytest.raises(StoreUnavailable):
        repo.check_writable()


def test_sqlite_close_while_calls_run_in_other_threads(sqlite_path: Path) -> None:
    """Closing the repository (a server stopping) while store threads still run
    statements on their connections - here writers that were waiting for the lock and get
    it just then: each connection is closed when its call ends, never under it (which
    crashed the process). A call ends done, or StoreUnavailable: the repository closed."""
    SqliteRepository(sqlite_path).close()
    blocker = sqlite3.connect(sqlite_path, isolation_level=None)
    try:
        for _ in range(10):
            repo = SqliteRepository(sqlite_path)
            outcomes: list[BaseException | None] = []

            def write(
                user_id: str,
                repo: SqliteRepository = repo,
                outcomes: list[BaseException | None] = outcomes,
            ) -> None:
                try:
                    repo.apply(user_id, key(user_id), redeem("o1"), RECORDED)
                    outcomes.append(None)
                except BaseException as error:
                    outcomes.append(error)

            blocker.execute("BEGIN IMMEDIATE")
            writers = [threading.Thread(target=write, args=(f"u{i}",)) for i in range(4)]
            for writer in writers:
                writer.start()
            time.sleep(0.05)  # the writers wait for the lock now
            blocker.execute("ROLLBACK")
            repo.close()
            for writer in writers:
                writer.join(timeout=10)
                assert not writer.is_alive()
            assert all(o is None or isinstance(o, StoreUnavailable) for o in outcomes), outcomes
    finally:
        blocker.close()
