"""Properties of the decisions over random account states and random times.

The central one: a decision never changes before its valid_until, so callers and caches
may keep it until then. Decisions only change at times that appear in the state (period,
grace, grant and membership times), at those times shifted by a rule's number of days,
or at an offer's window bounds; the tests check every such time in range (and just before
and after it), plus random ones.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

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
from service.domain.decisions import (
    EntitlementDecision,
    OfferDecisions,
    decide_entitlement,
    decide_offers,
)
from service.domain.rules import LapsedForDays, NotInHouseholdCooldown, Platform

from .factories import CATALOG

BASE = datetime(2026, 11, 15, tzinfo=UTC)  # the holiday offer's window is in range
STEP = timedelta(hours=12)
EPS = timedelta(microseconds=1)
HORIZON = timedelta(days=200)
TRIAL_GROUP = "trial"

# Coarse times, so that periods, grants and `now` often coincide exactly.
times = st.integers(-120, 120).map(lambda n: BASE + n * STEP)
optional_times = st.none() | times
PLAN_IDS = [*sorted(CATALOG.plans), "retired_plan"]
FEATURE_IDS = [*CATALOG.features, "karaoke"]
OFFER_GROUPS = sorted({o.group for o in CATALOG.offers})
MARKETS = [*sorted(CATALOG.markets), "ZZ"]
RULE_DAYS = sorted(
    {
        timedelta(days=rule.days)
        for offer in CATALOG.offers
        for rule in offer.rules
        if isinstance(rule, LapsedForDays | NotInHouseholdCooldown)
    }
)
OFFER_WINDOW_TIMES = [
    t for offer in CATALOG.offers for t in (offer.valid_from, offer.valid_until) if t is not None
]

# UNIT_PROPERTY_EXAMPLES=5000 for a longer search than the default fast run.
settings.register_profile(
    "unit-properties",
    max_examples=int(os.environ.get("UNIT_PROPERTY_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROPERTY_SETTINGS = settings.get_profile("unit-properties")


@st.composite
def subscriptions(draw: st.DrawFn, subscription_id: str) -> Subscription:
    status = draw(st.sampled_from(SubscriptionStatus))
    period_end = draw(times)
    grace = draw(optional_times)
    return Subscription(
        subscription_id=subscription_id,
        plan_id=draw(st.sampled_from(PLAN_IDS)),
        status=status,
        store=draw(st.sampled_from(Store)),
        started_at=draw(times),
        current_period_end=period_end,
        grace_period_end=grace,
        auto_renew=draw(st.booleans()),
        last_event_at=draw(optional_times),
    )


@st.composite
def grants(draw: st.DrawFn, grant_id: str) -> Grant:
    of_plan = draw(st.booleans())
    return Grant(
        grant_id=grant_id,
        kind=draw(st.sampled_from(GrantKind)),
        starts_at=draw(times),
        plan_id=draw(st.sampled_from(PLAN_IDS)) if of_plan else None,
        feature_id=None if of_plan else draw(st.sampled_from(FEATURE_IDS)),
        quota_value=draw(st.none() | st.integers(1, 50)),
        expires_at=draw(optional_times),
        revoked_at=draw(st.none() | st.none() | times),
    )


@st.composite
def redemptions(draw: st.DrawFn) -> Redemption:
    offer = draw(st.sampled_from(CATALOG.offers))
    group = draw(st.sampled_from([offer.group, *OFFER_GROUPS]))
    return Redemption(offer.id, group, draw(times), draw(st.sampled_from(Store)))


@st.composite
def memberships(draw: st.DrawFn) -> HouseholdMembership:
    return HouseholdMembership(
        household_id=draw(st.sampled_from(["hh-1", "hh-2"])),
        role=draw(st.sampled_from(HouseholdRole)),
        manager_user_id="manager-1",
        joined_at=draw(times),
        left_at=draw(optional_times),
    )


@st.composite
def user_states(draw: st.DrawFn) -> UserState:
    n_subs = draw(st.integers(0, 3))
    n_grants = draw(st.integers(0, 3))
    account = AccountState(
        user_id=draw(st.sampled_from([f"user-{n}" for n in range(20)])),
        version=draw(st.integers(0, 10)),
        home_market=draw(st.sampled_from(MARKETS)),
        subscriptions=tuple(draw(subscriptions(f"sub-{i}")) for i in range(n_subs)),
        grants=tuple(draw(grants(f"grant-{i}")) for i in range(n_grants)),
        redemptions=tuple(draw(st.lists(redemptions(), max_size=2))),
        memberships=tuple(draw(st.lists(memberships(), max_size=2))),
        student_verified_until=draw(optional_times),
    )
    household = None
    if draw(st.booleans()):
        n_manager_subs = draw(st.integers(0, 2))
        household = Household(
            household_id=draw(st.sampled_from(["hh-1", "hh-2"])),
            manager_user_id="manager-1",
            manager_subscriptions=tuple(
                draw(subscriptions(f"manager-sub-{i}")) for i in range(n_manager_subs)
            ),
        )
    return UserState(account=account, household=household)


def state_times(value: Any) -> Iterator[datetime]:
    """Every datetime in a (nested) state."""
    if isinstance(value, datetime):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from state_times(getattr(value, f.name))
    elif isinstance(value, tuple):
        for item in value:
            yield from state_times(item)


def checkpoints(
    state: UserState, now: datetime, until: datetime | None, offers: bool
) -> list[datetime]:
    """The times in [now, until) at which a decision made at `now` might change."""
    end = until if until is not None else now + HORIZON
    points = set(state_times(state))
    if offers:
        points |= {t + days for t in list(points) for days in RULE_DAYS}
        points |= set(OFFER_WINDOW_TIMES)
    points |= {now, end - EPS}
    around = {p + d for p in points for d in (-EPS, timedelta(0), EPS)}
    return sorted(t for t in around if now <= t < end)


def random_time_in(data: st.DataObject, now: datetime, until: datetime | None) -> datetime:
    span = (until if until is not None else now + HORIZON) - now
    micros = data.draw(st.integers(0, span // EPS - 1), label="offset_us")
    return now + micros * EPS


def entitlement_key(d: EntitlementDecision) -> tuple[Any, ...]:
    return (d.granted, d.value, d.source, d.state, d.plan_id, d.expires_at, d.denial)


def offers_key(answer: OfferDecisions) -> tuple[Any, ...]:
    return (answer.eligible, answer.ineligible)


def ever_held_premium(state: UserState, now: datetime) -> bool:
    """A premium subscription in any status, or a premium plan grant that was in force at
    some time up to `now`."""
    premium = CATALOG.premium_plan_ids
    account = state.account
    if any(s.plan_id in premium for s in account.subscriptions):
        return True
    for g in account.grants:
        if g.plan_id not in premium or g.starts_at > now:
            continue
        ends = [t for t in (g.expires_at, g.revoked_at) if t is not None]
        if all(end > g.starts_at for end in ends):
            return True
    return False


# --- entitlements ---------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(state=user_states(), now=times, data=st.data())
def test_entitlement_decision_holds_until_valid_until(
    state: UserState, now: datetime, data: st.DataObject
) -> None:
    for feature_id in CATALOG.features:
        decision = decide_entitlement(CATALOG, state, feature_id, now)
        until = decision.valid_until
        assert until is None or until > now
        expected = entitlement_key(decision)
        points = checkpoints(state, now, until, offers=False)
        points.append(random_time_in(data, now, until))
        for t in points:
            later = decide_entitlement(CATALOG, state, feature_id, t)
            assert entitlement_key(later) == expected, (feature_id, now, t, decision, later)


@PROPERTY_SETTINGS
@given(state=user_states(), now=times)
def test_granted_decision_ends_with_its_source(state: UserState, now: datetime) -> None:
    for feature_id in CATALOG.features:
        decision = decide_entitlement(CATALOG, state, feature_id, now)
        if not decision.granted:
            assert decision.denial is not None
            assert decision.source is None
            continue
        assert decision.source is not None
        assert decision.state is not None
        if decision.expires_at is None:
            continue
        assert decision.valid_until is not None
        assert decision.expires_at >= decision.valid_until > now
        # Without a new event, the source does not grant past its expiry.
        at_expiry = decide_entitlement(CATALOG, state, feature_id, decision.expires_at)
        assert not (
            at_expiry.granted
            and at_expiry.source == decision.source
            and at_expiry.expires_at == decision.expires_at
        ), (feature_id, decision, at_expiry)
        later = decide_entitlement(CATALOG, state, feature_id, decision.expires_at + HORIZON)
        assert not (
            later.granted
            and later.source == decision.source
            and later.plan_id == decision.plan_id
            and later.expires_at == decision.expires_at
        )


# --- offers ---------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(
    state=user_states(),
    now=times,
    market=st.sampled_from(MARKETS),
    platform=st.sampled_from(Platform),
    data=st.data(),
)
def test_offers_answer_holds_until_valid_until(
    state: UserState, now: datetime, market: str, platform: Platform, data: st.DataObject
) -> None:
    answer = decide_offers(CATALOG, state, market, platform, now)
    until = answer.valid_until
    assert until is None or until > now
    expected = offers_key(answer)
    points = checkpoints(state, now, until, offers=True)
    points.append(random_time_in(data, now, until))
    for t in points:
        later = decide_offers(CATALOG, state, market, platform, t)
        assert offers_key(later) == expected, (now, t, answer, later)


@PROPERTY_SETTINGS
@given(
    state=user_states(),
    now=times,
    market=st.sampled_from(MARKETS),
    platform=st.sampled_from(Platform),
)
def test_trial_only_for_users_who_never_had_premium_nor_a_trial(
    state: UserState, now: datetime, market: str, platform: Platform
) -> None:
    answer = decide_offers(CATALOG, state, market, platform, now)
    trials = [e.offer.id for e in answer.eligible if e.offer.group == TRIAL_GROUP]
    if not trials:
        return
    redeemed = {r.offer_group for r in state.account.redemptions}
    assert TRIAL_GROUP not in redeemed, trials
    assert not ever_held_premium(state, now), trials


@PROPERTY_SETTINGS
@given(
    state=user_states(),
    now=times,
    market=st.sampled_from(MARKETS),
    platform=st.sampled_from(Platform),
)
def test_eligible_and_ineligible_partition_the_catalog(
    state: UserState, now: datetime, market: str, platform: Platform
) -> None:
    answer = decide_offers(CATALOG, state, market, platform, now)
    eligible = [e.offer for e in answer.eligible]
    ineligible = [i.offer for i in answer.ineligible]
    assert len(eligible) + len(ineligible) == len(CATALOG.offers)
    assert sorted(o.id for o in eligible + ineligible) == sorted(o.id for o in CATALOG.offers)
    # Best first; each eligible offer is priced in the market's currency.
    assert [o.priority for o in eligible] == sorted((o.priority for o in eligible), reverse=True)
    for e in answer.eligible:
        assert e.currency == CATALOG.markets[market].currency
        assert e.price_minor == e.offer.prices[market]
        assert (e.experiment_arm is None) == (e.offer.experiment is None)
