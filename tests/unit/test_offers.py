"""Offer decisions, example by example: who sees which offer, why not, at what price."""

from __future__ import annotations

import copy
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from service.catalog import EXAMPLE_CATALOG, load_catalog, parse_catalog
from service.domain.account import HouseholdRole, SubscriptionStatus, UserState
from service.domain.catalog import Catalog, Experiment, ExperimentArm
from service.domain.decisions import (
    EligibleOffer,
    IneligibleOffer,
    OfferDecisions,
    decide_offers,
)
from service.domain.rules import IneligibilityReason, Platform

from .factories import (
    CATALOG,
    DAY,
    NOW,
    PREMIUM,
    experiment_of,
    grant,
    household_member,
    membership,
    redemption,
    subscription,
    user,
    user_id_in_arm,
)

R = IneligibilityReason
TRIAL = "premium-individual-trial-1m"
FAMILY_TRIAL = "premium-family-trial-1m"
DUO_INTRO = "premium-duo-intro-3m"
WINBACK = "premium-individual-winback-3m"
STUDENT = "premium-student-12m"
HOLIDAY = "premium-individual-holiday-2026"
FAMILY_UPGRADE = "premium-family-upgrade-2m"

HOLIDAY_START = datetime(2026, 11, 20, tzinfo=UTC)
HOLIDAY_END = datetime(2027, 1, 6, tzinfo=UTC)
IN_HOLIDAY = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CONTROL_USER = user_id_in_arm(DUO_INTRO, "control")
INTRO_USER = user_id_in_arm(DUO_INTRO, "intro-price")


def offers(
    state: UserState,
    market: str = "US",
    platform: Platform = Platform.WEB,
    now: datetime = NOW,
    catalog: Catalog = CATALOG,
) -> OfferDecisions:
    answer = decide_offers(catalog, state, market, platform, now)
    ids = [e.offer.id for e in answer.eligible] + [i.offer.id for i in answer.ineligible]
    assert sorted(ids) == sorted(o.id for o in catalog.offers)
    return answer


def eligible_ids(answer: OfferDecisions) -> list[str]:
    return [e.offer.id for e in answer.eligible]


def eligible(answer: OfferDecisions, offer_id: str) -> EligibleOffer:
    for e in answer.eligible:
        if e.offer.id == offer_id:
            return e
    reasons = {i.offer.id: (i.reason, i.detail) for i in answer.ineligible}
    raise AssertionError(f"{offer_id} not eligible: {reasons.get(offer_id)}")


def ineligible(answer: OfferDecisions, offer_id: str) -> IneligibleOffer:
    for i in answer.ineligible:
        if i.offer.id == offer_id:
            return i
    raise AssertionError(f"{offer_id} is eligible")


def reason(answer: OfferDecisions, offer_id: str) -> IneligibilityReason:
    return ineligible(answer, offer_id).reason


def lapsed_user(days: int, user_id: str = CONTROL_USER) -> UserState:
    """A former premium subscriber whose subscription expired `days` days ago."""
    ended = NOW - days * DAY
    return user(
        user_id,
        subscriptions=[
            subscription(
                status=SubscriptionStatus.EXPIRED,
                period_end=ended,
                last_event_at=ended,
                started_at=ended - 100 * DAY,
            )
        ],
    )


def catalog_with(mutate: Any) -> Catalog:
    raw = yaml.safe_load(EXAMPLE_CATALOG.read_text(encoding="utf-8"))
    doc = copy.deepcopy(raw)
    mutate(doc)
    return parse_catalog(doc)


# --- a free user who never had premium -----------------------------------------------------


def test_new_free_user_in_the_holiday_window_sees_trials_and_holiday_discount() -> None:
    answer = offers(user(CONTROL_USER), now=IN_HOLIDAY)
    assert eligible_ids(answer) == [TRIAL, FAMILY_TRIAL, HOLIDAY]
    priorities = [e.offer.priority for e in answer.eligible]
    assert priorities == sorted(priorities, reverse=True)
    trial = eligible(answer, TRIAL)
    assert (trial.price_minor, trial.regular_price_minor, trial.currency) == (0, 1199, "USD")
    assert trial.experiment_arm is None
    family = eligible(answer, FAMILY_TRIAL)
    assert (family.price_minor, family.regular_price_minor) == (0, 1999)
    holiday = eligible(answer, HOLIDAY)
    assert (holiday.price_minor, holiday.regular_price_minor, holiday.currency) == (
        799,
        1199,
        "USD",
    )
    assert reason(answer, DUO_INTRO) is R.EXPERIMENT_ARM
    assert reason(answer, WINBACK) is R.NEVER_SUBSCRIBED
    assert reason(answer, STUDENT) is R.STUDENT_NOT_VERIFIED
    assert reason(answer, FAMILY_UPGRADE) is R.CURRENT_PLAN_NOT_ELIGIBLE
    # Nothing changes by itself before the holiday offer ends.
    assert answer.valid_until == HOLIDAY_END


def test_new_free_user_in_the_intro_price_arm_also_sees_the_duo_intro() -> None:
    answer = offers(user(INTRO_USER), now=IN_HOLIDAY)
    assert eligible_ids(answer) == [TRIAL, FAMILY_TRIAL, DUO_INTRO, HOLIDAY]
    duo = eligible(answer, DUO_INTRO)
    assert duo.experiment_arm == "intro-price"
    assert (duo.price_minor, duo.regular_price_minor, duo.currency) == (999, 1699, "USD")


def test_new_free_user_before_the_holiday_window() -> None:
    answer = offers(user(CONTROL_USER), now=NOW)
    assert eligible_ids(answer) == [TRIAL, FAMILY_TRIAL]
    holiday = ineligible(answer, HOLIDAY)
    assert holiday.reason is R.OUTSIDE_VALIDITY_WINDOW
    assert "not started" in holiday.detail
    assert answer.valid_until == HOLIDAY_START
    just_before = offers(user(CONTROL_USER), now=HOLIDAY_START - DAY / 1000)
    assert reason(just_before, HOLIDAY) is R.OUTSIDE_VALIDITY_WINDOW
    at_start = offers(user(CONTROL_USER), now=HOLIDAY_START)
    assert HOLIDAY in eligible_ids(at_start)


def test_new_free_user_after_the_holiday_window() -> None:
    for now in (HOLIDAY_END, HOLIDAY_END + 40 * DAY):
        answer = offers(user(CONTROL_USER), now=now)
        assert eligible_ids(answer) == [TRIAL, FAMILY_TRIAL]
        holiday = ineligible(answer, HOLIDAY)
        assert holiday.reason is R.OUTSIDE_VALIDITY_WINDOW
        assert holiday.detail == "ended"
        assert answer.valid_until is None


# --- each rule's reason -------------------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [
        lapsed_user(400),
        user(subscriptions=[subscription(status=SubscriptionStatus.TRIALING)]),
        user(subscriptions=[subscription("basic", status=SubscriptionStatus.REVOKED)]),
        user(grants=[grant(plan_id=PREMIUM, expires_at=NOW - 50 * DAY, starts_at=NOW - 80 * DAY)]),
        household_member(subscription("premium_family")),
    ],
    ids=["lapsed", "trialing", "refunded-basic", "expired-plan-grant", "family-member"],
)
def test_had_premium_before(state: UserState) -> None:
    answer = offers(state)
    assert reason(answer, TRIAL) is R.HAD_PREMIUM_BEFORE
    assert reason(answer, FAMILY_TRIAL) is R.HAD_PREMIUM_BEFORE


def test_plan_grant_revoked_after_it_started_counts_as_premium() -> None:
    # The user held premium through the grant until it was revoked (like a refunded
    # subscription, which counts too).
    state = user(grants=[grant(plan_id=PREMIUM, starts_at=NOW - 9 * DAY, revoked_at=NOW - DAY)])
    assert reason(offers(state), TRIAL) is R.HAD_PREMIUM_BEFORE
    # Revoked later than now: the grant is in force now.
    state = user(grants=[grant(plan_id=PREMIUM, starts_at=NOW - 9 * DAY, revoked_at=NOW + DAY)])
    assert reason(offers(state), TRIAL) is R.HAD_PREMIUM_BEFORE
    # Revoked before it started: never held.
    state = user(grants=[grant(plan_id=PREMIUM, starts_at=NOW - 9 * DAY, revoked_at=NOW - 9 * DAY)])
    assert TRIAL in eligible_ids(offers(state))
    # Not started yet: not held yet, and the answer changes when it starts.
    starts = NOW + 4 * DAY
    answer = offers(user(grants=[grant(plan_id=PREMIUM, starts_at=starts)]))
    assert TRIAL in eligible_ids(answer)
    assert answer.valid_until == starts


def test_a_feature_grant_is_not_premium() -> None:
    state = user(grants=[grant(feature_id="offline_downloads")])
    assert TRIAL in eligible_ids(offers(state))


def test_group_already_redeemed() -> None:
    # A trial redeemed on another store, whose subscription is not (yet) known here.
    state = user(CONTROL_USER, redemptions=[redemption("some-old-trial", "trial")])
    answer = offers(state, now=IN_HOLIDAY)
    assert reason(answer, TRIAL) is R.GROUP_ALREADY_REDEEMED
    assert reason(answer, FAMILY_TRIAL) is R.GROUP_ALREADY_REDEEMED
    assert "trial" in ineligible(answer, TRIAL).detail
    assert eligible_ids(answer) == [HOLIDAY]
    holiday = user(CONTROL_USER, redemptions=[redemption(HOLIDAY, "holiday-2026")])
    assert reason(offers(holiday, now=IN_HOLIDAY), HOLIDAY) is R.GROUP_ALREADY_REDEEMED
    winback = lapsed_user(60)
    winback = user(
        CONTROL_USER,
        subscriptions=winback.account.subscriptions,
        redemptions=[redemption(WINBACK, "winback", at=NOW - 400 * DAY)],
    )
    assert reason(offers(winback), WINBACK) is R.GROUP_ALREADY_REDEEMED


def test_never_subscribed() -> None:
    assert reason(offers(user()), WINBACK) is R.NEVER_SUBSCRIBED
    # A household member never had a subscription of their own.
    member = household_member(subscription("premium_family", status=SubscriptionStatus.EXPIRED))
    assert reason(offers(member), WINBACK) is R.NEVER_SUBSCRIBED


@pytest.mark.parametrize(
    "status",
    [
        SubscriptionStatus.ACTIVE,
        SubscriptionStatus.TRIALING,
        SubscriptionStatus.CANCELED,
        SubscriptionStatus.IN_GRACE_PERIOD,
        SubscriptionStatus.ON_HOLD,
        SubscriptionStatus.PAUSED,
    ],
)
def test_currently_subscribed(status: SubscriptionStatus) -> None:
    state = user(subscriptions=[subscription(status=status, period_end=NOW + 5 * DAY)])
    assert reason(offers(state), WINBACK) is R.CURRENTLY_SUBSCRIBED


def test_currently_subscribed_through_the_household() -> None:
    end = NOW + 5 * DAY
    answer = offers(household_member(subscription("premium_family", period_end=end)))
    assert reason(answer, WINBACK) is R.CURRENTLY_SUBSCRIBED
    assert answer.valid_until == end


def test_not_lapsed_long_enough() -> None:
    answer = offers(lapsed_user(10))
    winback = ineligible(answer, WINBACK)
    assert winback.reason is R.NOT_LAPSED_LONG_ENOUGH
    assert "30 days" in winback.detail
    lapsed_at = NOW - 10 * DAY
    assert answer.valid_until == lapsed_at + 30 * DAY
    at_30_days = offers(lapsed_user(10), now=lapsed_at + 30 * DAY)
    assert WINBACK in eligible_ids(at_30_days)


def test_canceled_subscription_lapses_at_its_period_end() -> None:
    end = NOW + 3 * DAY
    state = user(subscriptions=[subscription(status=SubscriptionStatus.CANCELED, period_end=end)])
    answer = offers(state)
    assert reason(answer, WINBACK) is R.CURRENTLY_SUBSCRIBED
    assert answer.valid_until == end
    at_end = offers(state, now=end)
    assert reason(at_end, WINBACK) is R.NOT_LAPSED_LONG_ENOUGH
    assert at_end.valid_until == end + 30 * DAY
    assert WINBACK in eligible_ids(offers(state, now=end + 30 * DAY))


def test_lapsed_for_31_days_gets_the_winback_not_the_trial() -> None:
    answer = offers(lapsed_user(31))
    assert eligible_ids(answer) == [WINBACK]
    winback = eligible(answer, WINBACK)
    assert (winback.price_minor, winback.regular_price_minor, winback.currency) == (
        599,
        1199,
        "USD",
    )
    assert reason(answer, TRIAL) is R.HAD_PREMIUM_BEFORE
    assert reason(answer, FAMILY_TRIAL) is R.HAD_PREMIUM_BEFORE


def test_current_plan_not_eligible() -> None:
    verified = NOW + 100 * DAY
    subscriber = user(subscriptions=[subscription()], student_verified_until=verified)
    student = ineligible(offers(subscriber), STUDENT)
    assert student.reason is R.CURRENT_PLAN_NOT_ELIGIBLE
    assert PREMIUM in student.detail
    assert reason(offers(user()), FAMILY_UPGRADE) is R.CURRENT_PLAN_NOT_ELIGIBLE
    # Basic subscribers may take the student offer; individual subscribers the upgrade.
    basic = user(subscriptions=[subscription("basic")], student_verified_until=verified)
    assert STUDENT in eligible_ids(offers(basic))
    assert FAMILY_UPGRADE in eligible_ids(offers(user(subscriptions=[subscription()])))


def test_household_member_of_a_single_person_plan_is_not_on_that_plan() -> None:
    # A manager's individual plan is not shared, so it is not the member's current plan
    # (as for entitlements: household semantics only for plans with household_size > 1).
    member = household_member(subscription(PREMIUM))
    answer = offers(member)
    assert reason(answer, FAMILY_UPGRADE) is R.CURRENT_PLAN_NOT_ELIGIBLE
    assert "'free'" in ineligible(answer, FAMILY_UPGRADE).detail
    family_member = household_member(subscription("premium_family"))
    detail = ineligible(offers(family_member), FAMILY_UPGRADE).detail
    assert "'premium_family'" in detail


@pytest.mark.parametrize("market", ["JP", "BR", "IN", "MX"])
def test_market_not_eligible(market: str) -> None:
    answer = offers(user(INTRO_USER), market=market)
    duo = ineligible(answer, DUO_INTRO)
    assert duo.reason is R.MARKET_NOT_ELIGIBLE
    assert market in duo.detail
    assert TRIAL in eligible_ids(answer)


def test_offer_window_end_bounds_the_answer_in_markets_without_the_offer() -> None:
    # The holiday offer is not sold in JP; at its end the reason still changes (to
    # OUTSIDE_VALIDITY_WINDOW), so the answer is valid only until then.
    answer = offers(user(CONTROL_USER), market="JP", now=IN_HOLIDAY)
    assert reason(answer, HOLIDAY) is R.MARKET_NOT_ELIGIBLE
    assert answer.valid_until == HOLIDAY_END
    after = offers(user(CONTROL_USER), market="JP", now=HOLIDAY_END)
    assert reason(after, HOLIDAY) is R.OUTSIDE_VALIDITY_WINDOW
    ios = offers(user(CONTROL_USER), platform=Platform.IOS, now=IN_HOLIDAY)
    assert reason(ios, HOLIDAY) is R.PLATFORM_NOT_ELIGIBLE
    assert ios.valid_until == HOLIDAY_END


@pytest.mark.parametrize("market", ["ZZ", "XX"])
def test_unknown_market_sees_no_offer(market: str) -> None:
    answer = offers(user(INTRO_USER), market=market, now=IN_HOLIDAY)
    assert answer.eligible == ()
    assert {i.reason for i in answer.ineligible} == {R.MARKET_NOT_ELIGIBLE}


def test_market_in_rule() -> None:
    def restrict(doc: dict[str, Any]) -> None:
        doc["offers"][0]["eligibility"].append({"market_in": ["US", "GB"]})

    catalog = catalog_with(restrict)
    assert TRIAL in eligible_ids(offers(user(), market="GB", catalog=catalog))
    answer = offers(user(), market="SE", catalog=catalog)
    assert reason(answer, TRIAL) is R.MARKET_NOT_ELIGIBLE
    assert "SE" in ineligible(answer, TRIAL).detail


@pytest.mark.parametrize("platform", [Platform.IOS, Platform.ANDROID])
def test_platform_not_eligible(platform: Platform) -> None:
    answer = offers(user(CONTROL_USER), platform=platform, now=IN_HOLIDAY)
    holiday = ineligible(answer, HOLIDAY)
    assert holiday.reason is R.PLATFORM_NOT_ELIGIBLE
    assert platform.value in holiday.detail
    assert HOLIDAY in eligible_ids(
        offers(user(CONTROL_USER), platform=Platform.DESKTOP, now=IN_HOLIDAY)
    )


def test_platform_in_rule() -> None:
    def restrict(doc: dict[str, Any]) -> None:
        doc["offers"][0]["eligibility"].append({"platform_in": ["android"]})

    catalog = catalog_with(restrict)
    answer = offers(user(), platform=Platform.WEB, catalog=catalog)
    assert reason(answer, TRIAL) is R.PLATFORM_NOT_ELIGIBLE
    assert TRIAL in eligible_ids(offers(user(), platform=Platform.ANDROID, catalog=catalog))


def test_student_not_verified() -> None:
    assert reason(offers(user()), STUDENT) is R.STUDENT_NOT_VERIFIED
    expired = user(student_verified_until=NOW - DAY)
    assert reason(offers(expired), STUDENT) is R.STUDENT_NOT_VERIFIED
    at_expiry = user(student_verified_until=NOW)
    assert reason(offers(at_expiry), STUDENT) is R.STUDENT_NOT_VERIFIED


def test_verified_student() -> None:
    until = NOW + 100 * DAY
    answer = offers(user(student_verified_until=until), market="SE")
    student = eligible(answer, STUDENT)
    assert (student.price_minor, student.regular_price_minor, student.currency) == (
        7500,
        7500,
        "SEK",
    )
    assert answer.valid_until is not None
    assert answer.valid_until <= until
    assert reason(offers(user(student_verified_until=until), now=until), STUDENT) is (
        R.STUDENT_NOT_VERIFIED
    )


def test_household_cooldown() -> None:
    joined = NOW - 10 * DAY
    state = user(
        subscriptions=[subscription(period_end=NOW + 60 * DAY)],
        memberships=[membership(HouseholdRole.MANAGER, joined_at=joined)],
    )
    answer = offers(state)
    upgrade = ineligible(answer, FAMILY_UPGRADE)
    assert upgrade.reason is R.HOUSEHOLD_COOLDOWN
    assert "30 days" in upgrade.detail
    assert answer.valid_until == joined + 30 * DAY
    assert FAMILY_UPGRADE in eligible_ids(offers(state, now=joined + 30 * DAY))
    # Leaving a household restarts the cooldown.
    left = user(
        subscriptions=[subscription(period_end=NOW + 60 * DAY)],
        memberships=[
            membership(HouseholdRole.MANAGER, joined_at=NOW - 300 * DAY, left_at=NOW - 2 * DAY)
        ],
    )
    assert reason(offers(left), FAMILY_UPGRADE) is R.HOUSEHOLD_COOLDOWN


def test_household_cooldown_for_the_family_trial() -> None:
    state = user(memberships=[membership(HouseholdRole.MANAGER, joined_at=NOW - 5 * DAY)])
    answer = offers(state)
    assert reason(answer, FAMILY_TRIAL) is R.HOUSEHOLD_COOLDOWN
    assert TRIAL in eligible_ids(answer)


def test_experiment_arm() -> None:
    answer = offers(user(CONTROL_USER))
    duo = ineligible(answer, DUO_INTRO)
    assert duo.reason is R.EXPERIMENT_ARM
    assert "duo-intro-price-2026" in duo.detail
    assert "control" in duo.detail


def test_users_who_could_never_see_the_offer_are_not_assigned() -> None:
    # The experiment is checked last: an ineligible user reports the real reason.
    answer = offers(lapsed_user(100, user_id=CONTROL_USER))
    assert reason(answer, DUO_INTRO) is R.HAD_PREMIUM_BEFORE


# --- local prices -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("market", "currency", "trial_regular", "holiday_price"),
    [
        ("US", "USD", 1199, 799),
        ("GB", "GBP", 1199, 799),
        ("SE", "SEK", 13900, 8900),
        ("DE", "EUR", 1199, 799),
        ("FR", "EUR", 1212, 808),
        ("JP", "JPY", 1080, None),
        ("BR", "BRL", 2190, None),
    ],
)
def test_local_prices_and_currency(
    market: str, currency: str, trial_regular: int, holiday_price: int | None
) -> None:
    answer = offers(user(CONTROL_USER), market=market, now=IN_HOLIDAY)
    trial = eligible(answer, TRIAL)
    assert (trial.price_minor, trial.regular_price_minor, trial.currency) == (
        0,
        trial_regular,
        currency,
    )
    if holiday_price is None:
        assert reason(answer, HOLIDAY) is R.MARKET_NOT_ELIGIBLE
    else:
        holiday = eligible(answer, HOLIDAY)
        assert (holiday.price_minor, holiday.currency) == (holiday_price, currency)
    for e in answer.eligible:
        assert e.currency == CATALOG.markets[market].currency
        assert e.price_minor == e.offer.prices[market]
        assert e.regular_price_minor == CATALOG.markets[market].plan_prices[e.offer.plan_id]


def test_winback_price_in_japan() -> None:
    winback = eligible(offers(lapsed_user(45), market="JP"), WINBACK)
    assert (winback.price_minor, winback.regular_price_minor, winback.currency) == (
        540,
        1080,
        "JPY",
    )


# --- experiment assignment ----------------------------------------------------------------


def test_experiment_assignment_is_deterministic() -> None:
    experiment = experiment_of(DUO_INTRO)
    reloaded = next(o for o in load_catalog().offers if o.id == DUO_INTRO).experiment
    assert reloaded is not None
    for n in range(200):
        user_id = f"user-{n}"
        arm = experiment.assign(user_id)
        assert experiment.assign(user_id) == arm
        assert reloaded.assign(user_id) == arm
    # Different experiments assign independently: the same users do not all land in the
    # same-named arm of a copy of the experiment under another id.
    other = Experiment("another-experiment", experiment.arms)
    same = sum(other.assign(f"user-{n}") == experiment.assign(f"user-{n}") for n in range(400))
    assert 120 < same < 280


def test_experiment_assignment_follows_the_weights() -> None:
    experiment = experiment_of(DUO_INTRO)
    counts = Counter(experiment.assign(f"user-{n}").name for n in range(2000))
    assert set(counts) == {"control", "intro-price"}
    assert abs(counts["intro-price"] - 1000) <= 100
    weighted = Experiment(
        "three-arms",
        (
            ExperimentArm("a", 20, True),
            ExperimentArm("b", 30, True),
            ExperimentArm("c", 50, False),
        ),
    )
    counts = Counter(weighted.assign(f"u{n}").name for n in range(2000))
    for name, weight in (("a", 20), ("b", 30), ("c", 50)):
        assert abs(counts[name] - 2000 * weight / 100) <= 100, counts


def test_decided_arm_matches_the_assignment() -> None:
    experiment = experiment_of(DUO_INTRO)
    shown = 0
    for n in range(100):
        user_id = f"user-{n}"
        answer = offers(user(user_id))
        arm = experiment.assign(user_id)
        if arm.shows_offer:
            shown += 1
            assert eligible(answer, DUO_INTRO).experiment_arm == arm.name
        else:
            assert reason(answer, DUO_INTRO) is R.EXPERIMENT_ARM
    assert 0 < shown < 100
