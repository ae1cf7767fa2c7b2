"""Entitlement decisions, example by example, at a fixed `now`."""

from __future__ import annotations

from datetime import datetime

import pytest

from service.domain.account import (
    Household,
    HouseholdRole,
    Store,
    SubscriptionStatus,
    UserState,
)
from service.domain.decisions import (
    DenialReason,
    EntitlementDecision,
    EntitlementState,
    Source,
    SourceType,
    decide_all_entitlements,
    decide_entitlement,
)

from .factories import (
    CATALOG,
    DAY,
    NOW,
    PREMIUM,
    grant,
    household_member,
    membership,
    subscription,
    user,
)

# Features of the free tier, and those only premium plans carry (from the catalog, which
# is edited independently of these tests).
FREE_FEATURES = tuple(CATALOG.plans["free"].features)
PREMIUM_FEATURES = tuple(
    f for f in CATALOG.plans["premium_individual"].features if f not in FREE_FEATURES
)


def decide(state: UserState, feature_id: str, now: datetime = NOW) -> EntitlementDecision:
    decision = decide_entitlement(CATALOG, state, feature_id, now)
    assert decision.feature.id == feature_id
    assert decision.user_id == state.account.user_id
    assert decision.granted == (decision.denial is None)
    return decision


def assert_denied(
    decision: EntitlementDecision, denial: DenialReason, valid_until: datetime | None = None
) -> None:
    assert not decision.granted
    assert decision.denial is denial
    assert decision.value is None
    assert decision.source is None
    assert decision.state is None
    assert decision.expires_at is None
    assert decision.valid_until == valid_until


# --- free users ------------------------------------------------------------------------


def test_free_user_gets_the_free_tier_only() -> None:
    state = user()
    decisions = {d.feature.id: d for d in decide_all_entitlements(CATALOG, state, NOW)}
    for feature_id in FREE_FEATURES:
        d = decisions[feature_id]
        assert d.granted
        assert d.source == Source(SourceType.FREE_TIER)
        assert d.state is EntitlementState.ACTIVE
        assert d.plan_id == "free"
        assert d.expires_at is None
        assert d.valid_until is None
    for feature_id in (*PREMIUM_FEATURES, "family_content_filter"):
        assert_denied(decisions[feature_id], DenialReason.NO_ENTITLING_SOURCE)


def test_decide_all_returns_one_decision_per_feature_in_catalog_order() -> None:
    state = user(subscriptions=[subscription("premium_family")])
    decisions = decide_all_entitlements(CATALOG, state, NOW)
    assert [d.feature.id for d in decisions] == list(CATALOG.features)
    assert decisions == [decide(state, feature_id) for feature_id in CATALOG.features]


# --- own subscriptions: the status machine ----------------------------------------------


def test_trialing_subscription() -> None:
    end = NOW + 7 * DAY
    state = user(
        subscriptions=[
            subscription(status=SubscriptionStatus.TRIALING, period_end=end, store=Store.APP_STORE)
        ]
    )
    d = decide(state, "offline_downloads")
    assert d.granted
    assert d.state is EntitlementState.TRIAL
    assert d.source == Source(SourceType.SUBSCRIPTION, "sub-1", Store.APP_STORE)
    assert d.plan_id == PREMIUM
    assert d.value is None
    assert d.expires_at == end
    assert d.valid_until == end
    hours = decide(state, "audiobook_hours")
    assert hours.granted
    assert hours.value == 15
    assert hours.state is EntitlementState.TRIAL


def test_active_subscription() -> None:
    end = NOW + 20 * DAY
    state = user(subscriptions=[subscription(period_end=end, store=Store.GOOGLE_PLAY)])
    for feature_id in PREMIUM_FEATURES:
        d = decide(state, feature_id)
        assert d.granted, feature_id
        assert d.state is EntitlementState.ACTIVE
        assert d.source == Source(SourceType.SUBSCRIPTION, "sub-1", Store.GOOGLE_PLAY)
        assert d.expires_at == end
        assert d.valid_until == end
    # A feature of the free tier too comes from Premium while the subscription lasts (the
    # free tier is only the fallback), then from the free tier.
    shuffle = decide(state, "shuffle_play")
    assert shuffle.source == Source(SourceType.SUBSCRIPTION, "sub-1", Store.GOOGLE_PLAY)
    assert shuffle.plan_id == PREMIUM
    assert shuffle.expires_at == end
    assert shuffle.valid_until == end
    after = decide(state, "shuffle_play", end)
    assert after.source == Source(SourceType.FREE_TIER)
    assert after.valid_until is None


def test_active_subscription_past_its_period_end_is_not_granted() -> None:
    # No renewal event arrived: no access after the period end.
    end = NOW - 1 * DAY
    state = user(subscriptions=[subscription(period_end=end)])
    assert_denied(decide(state, "offline_downloads"), DenialReason.EXPIRED)
    # Exactly at the period end, access has ended.
    state = user(subscriptions=[subscription(period_end=NOW)])
    assert_denied(decide(state, "offline_downloads"), DenialReason.EXPIRED)


def test_canceled_subscription_until_period_end_then_expired() -> None:
    end = NOW + 3 * DAY
    state = user(subscriptions=[subscription(status=SubscriptionStatus.CANCELED, period_end=end)])
    d = decide(state, "ad_free_playback")
    assert d.granted
    assert d.state is EntitlementState.CANCELED_UNTIL_PERIOD_END
    assert d.expires_at == end
    assert d.valid_until == end
    later = end - 1 * DAY
    assert decide(state, "ad_free_playback", later) == d
    assert_denied(decide(state, "ad_free_playback", end), DenialReason.EXPIRED)
    assert_denied(decide(state, "ad_free_playback", end + 30 * DAY), DenialReason.EXPIRED)


def test_grace_period_until_grace_end_then_expired() -> None:
    period_end = NOW - 2 * DAY
    grace_end = NOW + 5 * DAY
    state = user(
        subscriptions=[
            subscription(
                status=SubscriptionStatus.IN_GRACE_PERIOD,
                period_end=period_end,
                grace_period_end=grace_end,
            )
        ]
    )
    d = decide(state, "unlimited_skips")
    assert d.granted
    assert d.state is EntitlementState.GRACE_PERIOD
    assert d.expires_at == grace_end
    assert d.valid_until == grace_end
    assert_denied(decide(state, "unlimited_skips", grace_end), DenialReason.EXPIRED)


def test_grace_period_without_grace_end_lasts_until_period_end() -> None:
    period_end = NOW + 1 * DAY
    state = user(
        subscriptions=[
            subscription(status=SubscriptionStatus.IN_GRACE_PERIOD, period_end=period_end)
        ]
    )
    d = decide(state, "unlimited_skips")
    assert d.granted
    assert d.state is EntitlementState.GRACE_PERIOD
    assert d.valid_until == period_end
    assert_denied(decide(state, "unlimited_skips", period_end), DenialReason.EXPIRED)


@pytest.mark.parametrize(
    ("status", "denial"),
    [
        (SubscriptionStatus.ON_HOLD, DenialReason.SUBSCRIPTION_ON_HOLD),
        (SubscriptionStatus.PAUSED, DenialReason.SUBSCRIPTION_PAUSED),
        (SubscriptionStatus.REVOKED, DenialReason.REVOKED),
        (SubscriptionStatus.EXPIRED, DenialReason.EXPIRED),
    ],
)
def test_not_entitling_statuses(status: SubscriptionStatus, denial: DenialReason) -> None:
    # Even with a period end in the future, these statuses give no access.
    state = user(subscriptions=[subscription(status=status, period_end=NOW + 10 * DAY)])
    for feature_id in PREMIUM_FEATURES:
        assert_denied(decide(state, feature_id), denial)
    # Free-tier features are unaffected.
    assert decide(state, "shuffle_play").source == Source(SourceType.FREE_TIER)


def test_most_specific_denial_wins() -> None:
    state = user(
        subscriptions=[
            subscription(status=SubscriptionStatus.EXPIRED, subscription_id="old"),
            subscription(status=SubscriptionStatus.REVOKED, subscription_id="refunded"),
            subscription(status=SubscriptionStatus.ON_HOLD, subscription_id="held"),
        ]
    )
    assert_denied(decide(state, "offline_downloads"), DenialReason.SUBSCRIPTION_ON_HOLD)


def test_plan_lacking_the_feature() -> None:
    state = user(subscriptions=[subscription("basic")])
    assert decide(state, "offline_downloads").granted
    assert_denied(decide(state, "high_fidelity_audio"), DenialReason.PLAN_LACKS_FEATURE)
    assert_denied(decide(state, "audiobook_hours"), DenialReason.PLAN_LACKS_FEATURE)


def test_subscription_to_an_unknown_plan_is_ignored() -> None:
    state = user(subscriptions=[subscription("retired_plan")])
    assert_denied(decide(state, "offline_downloads"), DenialReason.NO_ENTITLING_SOURCE)


# --- households --------------------------------------------------------------------------


def test_family_manager_gets_audiobook_hours() -> None:
    end = NOW + 15 * DAY
    state = user(
        "manager-1",
        subscriptions=[subscription("premium_family", period_end=end)],
        memberships=[membership(HouseholdRole.MANAGER, manager_user_id="manager-1")],
    )
    hours = decide(state, "audiobook_hours")
    assert hours.granted
    assert hours.value == 15
    assert hours.source == Source(SourceType.SUBSCRIPTION, "sub-1", Store.WEB)
    assert hours.plan_id == "premium_family"
    assert hours.valid_until == end
    assert decide(state, "family_content_filter").granted


def test_family_member_gets_household_features_but_not_audiobook_hours() -> None:
    end = NOW + 15 * DAY
    manager_sub = subscription(
        "premium_family", subscription_id="mgr-sub", store=Store.APP_STORE, period_end=end
    )
    state = household_member(manager_sub, household_id="hh-42")
    d = decide(state, "offline_downloads")
    assert d.granted
    assert d.source == Source(SourceType.HOUSEHOLD, "hh-42", Store.APP_STORE)
    assert d.state is EntitlementState.ACTIVE
    assert d.plan_id == "premium_family"
    assert d.expires_at == end
    assert d.valid_until == end
    assert decide(state, "family_content_filter").granted
    # Audiobook hours go only to the plan manager; the denial holds as long as the
    # manager's subscription (then the reason becomes EXPIRED).
    assert_denied(decide(state, "audiobook_hours"), DenialReason.HOUSEHOLD_ROLE, valid_until=end)
    assert_denied(decide(state, "audiobook_hours", end), DenialReason.EXPIRED)


def test_duo_member() -> None:
    state = household_member(subscription("premium_duo", status=SubscriptionStatus.TRIALING))
    d = decide(state, "high_fidelity_audio")
    assert d.granted
    assert d.state is EntitlementState.TRIAL
    assert d.source is not None
    assert d.source.type is SourceType.HOUSEHOLD
    assert_denied(
        decide(state, "audiobook_hours"), DenialReason.HOUSEHOLD_ROLE, valid_until=NOW + 20 * DAY
    )


@pytest.mark.parametrize(
    ("status", "denial"),
    [
        (SubscriptionStatus.EXPIRED, DenialReason.EXPIRED),
        (SubscriptionStatus.ON_HOLD, DenialReason.SUBSCRIPTION_ON_HOLD),
        (SubscriptionStatus.REVOKED, DenialReason.REVOKED),
    ],
)
def test_member_whose_manager_lost_the_plan(
    status: SubscriptionStatus, denial: DenialReason
) -> None:
    state = household_member(subscription("premium_family", status=status))
    assert_denied(decide(state, "offline_downloads"), denial)
    assert_denied(decide(state, "audiobook_hours"), denial)
    # An ACTIVE subscription whose period ended without a renewal event, too.
    lapsed = household_member(subscription("premium_family", period_end=NOW - 1 * DAY))
    assert_denied(decide(lapsed, "offline_downloads"), DenialReason.EXPIRED)


@pytest.mark.parametrize("plan_id", ["premium_individual", "premium_student", "basic", "free"])
def test_household_semantics_only_for_household_plans(plan_id: str) -> None:
    # A manager on a single-person plan shares nothing with household members.
    state = household_member(subscription(plan_id))
    for feature_id in PREMIUM_FEATURES:
        assert_denied(decide(state, feature_id), DenialReason.NO_ENTITLING_SOURCE)


def test_member_with_own_subscription_prefers_it() -> None:
    own_end = NOW + 10 * DAY
    manager_end = NOW + 10 * DAY
    state = UserState(
        account=user(
            "member-1", subscriptions=[subscription(period_end=own_end, subscription_id="own")]
        ).account,
        household=Household(
            "hh-1", "manager-1", (subscription("premium_family", period_end=manager_end),)
        ),
    )
    d = decide(state, "offline_downloads")
    assert d.source == Source(SourceType.SUBSCRIPTION, "own", Store.WEB)
    # Audiobook hours come from the member's own individual plan.
    hours = decide(state, "audiobook_hours")
    assert hours.granted
    assert hours.value == 15
    assert hours.plan_id == PREMIUM


# --- grants ------------------------------------------------------------------------------


def test_feature_grant_with_quota_value() -> None:
    expires = NOW + 10 * DAY
    state = user(grants=[grant(feature_id="audiobook_hours", quota_value=10, expires_at=expires)])
    d = decide(state, "audiobook_hours")
    assert d.granted
    assert d.value == 10
    assert d.source == Source(SourceType.GRANT, "grant-1")
    assert d.state is EntitlementState.ACTIVE
    assert d.plan_id is None
    assert d.expires_at == expires
    assert d.valid_until == expires
    # The grant is of one feature only.
    assert_denied(decide(state, "offline_downloads"), DenialReason.NO_ENTITLING_SOURCE)


def test_boolean_feature_grant_has_no_value() -> None:
    state = user(grants=[grant(feature_id="offline_downloads", quota_value=3, expires_at=None)])
    d = decide(state, "offline_downloads")
    assert d.granted
    assert d.value is None
    assert d.expires_at is None
    assert d.valid_until is None


def test_plan_grant() -> None:
    expires = NOW + 10 * DAY
    state = user(grants=[grant(plan_id="premium_family", expires_at=expires)])
    for feature_id in (*PREMIUM_FEATURES, "family_content_filter"):
        d = decide(state, feature_id)
        assert d.granted, feature_id
        assert d.source == Source(SourceType.GRANT, "grant-1")
        assert d.plan_id == "premium_family"
        assert d.valid_until == expires
    # A plan grant ignores household roles: the grantee is not a member.
    assert decide(state, "audiobook_hours").value == 15


def test_future_grant_is_not_granted_yet() -> None:
    starts = NOW + 3 * DAY
    expires = NOW + 10 * DAY
    state = user(
        grants=[grant(feature_id="offline_downloads", starts_at=starts, expires_at=expires)]
    )
    assert_denied(
        decide(state, "offline_downloads"), DenialReason.NO_ENTITLING_SOURCE, valid_until=starts
    )
    d = decide(state, "offline_downloads", starts)
    assert d.granted
    assert d.valid_until == expires


def test_expired_grant() -> None:
    state = user(grants=[grant(plan_id=PREMIUM, expires_at=NOW - 1 * DAY)])
    assert_denied(decide(state, "offline_downloads"), DenialReason.EXPIRED)
    state = user(grants=[grant(plan_id=PREMIUM, expires_at=NOW)])
    assert_denied(decide(state, "offline_downloads"), DenialReason.EXPIRED)


def test_revoked_grant() -> None:
    state = user(grants=[grant(plan_id=PREMIUM, expires_at=None, revoked_at=NOW - 1 * DAY)])
    assert_denied(decide(state, "offline_downloads"), DenialReason.REVOKED)


def test_grant_revoked_in_the_future_lasts_until_revocation() -> None:
    revoked = NOW + 2 * DAY
    state = user(grants=[grant(plan_id=PREMIUM, expires_at=NOW + 9 * DAY, revoked_at=revoked)])
    d = decide(state, "offline_downloads")
    assert d.granted
    assert d.expires_at == revoked
    assert d.valid_until == revoked
    assert_denied(decide(state, "offline_downloads", revoked), DenialReason.REVOKED)


def test_grant_revoked_before_it_starts() -> None:
    # The revocation takes effect before the grant starts: the denial changes at the
    # revocation, so the first decision is valid only until then.
    revoked = NOW + 2 * DAY
    starts = NOW + 5 * DAY
    state = user(grants=[grant(plan_id=PREMIUM, starts_at=starts, revoked_at=revoked)])
    d = decide(state, "offline_downloads")
    assert not d.granted
    assert d.valid_until == revoked
    assert_denied(decide(state, "offline_downloads", revoked), DenialReason.REVOKED)
    assert_denied(decide(state, "offline_downloads", starts), DenialReason.REVOKED)


def test_grant_for_unknown_feature_or_plan_is_ignored() -> None:
    state = user(
        grants=[
            grant(grant_id="a", feature_id="karaoke"),
            grant(grant_id="b", plan_id="retired_plan"),
        ]
    )
    assert_denied(decide(state, "offline_downloads"), DenialReason.NO_ENTITLING_SOURCE)


# --- choosing the best source ------------------------------------------------------------


def test_higher_quota_wins() -> None:
    state = user(
        subscriptions=[subscription(period_end=NOW + 30 * DAY)],
        grants=[grant(feature_id="audiobook_hours", quota_value=40, expires_at=NOW + 5 * DAY)],
    )
    d = decide(state, "audiobook_hours")
    assert d.value == 40
    assert d.source == Source(SourceType.GRANT, "grant-1")
    assert d.expires_at == NOW + 5 * DAY
    assert d.valid_until == NOW + 5 * DAY
    # After the grant ends, the subscription's 15 hours remain.
    after = decide(state, "audiobook_hours", NOW + 5 * DAY)
    assert after.value == 15
    assert after.source is not None
    assert after.source.type is SourceType.SUBSCRIPTION
    # A smaller quota from a longer-lasting source loses to the larger one.
    small = user(
        subscriptions=[subscription(period_end=NOW + 3 * DAY)],
        grants=[grant(feature_id="audiobook_hours", quota_value=5, expires_at=None)],
    )
    assert decide(small, "audiobook_hours").value == 15


def test_longer_lasting_source_wins() -> None:
    short = subscription(subscription_id="short", period_end=NOW + 3 * DAY)
    long = subscription(subscription_id="long", period_end=NOW + 25 * DAY, store=Store.GOOGLE_PLAY)
    state = user(subscriptions=[short, long])
    d = decide(state, "offline_downloads")
    assert d.source == Source(SourceType.SUBSCRIPTION, "long", Store.GOOGLE_PLAY)
    assert d.expires_at == NOW + 25 * DAY
    # The decision may change when the shorter source ends, so it is valid until then.
    assert d.valid_until == NOW + 3 * DAY
    # A grant without expiry outlasts any subscription.
    forever = user(
        subscriptions=[short],
        grants=[grant(feature_id="offline_downloads", expires_at=None)],
    )
    d = decide(forever, "offline_downloads")
    assert d.source == Source(SourceType.GRANT, "grant-1")
    assert d.expires_at is None
    assert d.valid_until == NOW + 3 * DAY


def test_equal_sources_prefer_own_subscription() -> None:
    end = NOW + 10 * DAY
    state = UserState(
        account=user(
            "member-1",
            subscriptions=[subscription(period_end=end, subscription_id="own")],
            grants=[grant(plan_id=PREMIUM, expires_at=end)],
        ).account,
        household=Household("hh-1", "manager-1", (subscription("premium_family", period_end=end),)),
    )
    d = decide(state, "offline_downloads")
    assert d.source == Source(SourceType.SUBSCRIPTION, "own", Store.WEB)
    without_own = UserState(
        account=user("member-1", grants=[grant(plan_id=PREMIUM, expires_at=end)]).account,
        household=state.household,
    )
    d = decide(without_own, "offline_downloads")
    assert d.source is not None
    assert d.source.type is SourceType.HOUSEHOLD
