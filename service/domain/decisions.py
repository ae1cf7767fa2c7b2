"""Entitlement and offer decisions: pure functions of (catalog, user state, now).

Every decision says why, and until when it holds (`valid_until`): the earliest time at
which it can change without any new event (a period, grace or grant end, a grant start,
an offer window opening). Callers and caches may keep a decision until then.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from service.domain.account import (
    Access,
    AccountState,
    Grant,
    Household,
    HouseholdRole,
    Store,
    Subscription,
    SubscriptionStatus,
    UserState,
    subscription_access,
)
from service.domain.catalog import Catalog, Feature, FeatureKind, Offer
from service.domain.facts import AccountFacts, account_facts
from service.domain.rules import (
    IneligibilityReason,
    Platform,
    RuleContext,
    first_failure,
)


class SourceType(enum.StrEnum):
    SUBSCRIPTION = "subscription"
    GRANT = "grant"
    HOUSEHOLD = "household"
    FREE_TIER = "free_tier"


class EntitlementState(enum.StrEnum):
    ACTIVE = "active"
    TRIAL = "trial"
    GRACE_PERIOD = "grace_period"
    CANCELED_UNTIL_PERIOD_END = "canceled_until_period_end"


class DenialReason(enum.StrEnum):
    NO_ENTITLING_SOURCE = "no_entitling_source"
    PLAN_LACKS_FEATURE = "plan_lacks_feature"
    HOUSEHOLD_ROLE = "household_role"
    SUBSCRIPTION_ON_HOLD = "subscription_on_hold"
    SUBSCRIPTION_PAUSED = "subscription_paused"
    EXPIRED = "expired"
    REVOKED = "revoked"
    # A paid subscription to a student plan (Plan.requires_verified_student) while the
    # user's student status is not verified (expired or revoked).
    STUDENT_NOT_VERIFIED = "student_not_verified"


# When several reasons apply, the most specific one is reported (lowest rank first).
_DENIAL_RANK = {
    DenialReason.HOUSEHOLD_ROLE: 0,
    DenialReason.PLAN_LACKS_FEATURE: 1,
    DenialReason.STUDENT_NOT_VERIFIED: 2,
    DenialReason.SUBSCRIPTION_ON_HOLD: 3,
    DenialReason.SUBSCRIPTION_PAUSED: 4,
    DenialReason.REVOKED: 5,
    DenialReason.EXPIRED: 6,
    DenialReason.NO_ENTITLING_SOURCE: 7,
}

_ACCESS_DENIAL = {
    Access.ENDED: DenialReason.EXPIRED,
    Access.ON_HOLD: DenialReason.SUBSCRIPTION_ON_HOLD,
    Access.PAUSED: DenialReason.SUBSCRIPTION_PAUSED,
    Access.REVOKED: DenialReason.REVOKED,
}

_STATUS_STATE = {
    SubscriptionStatus.TRIALING: EntitlementState.TRIAL,
    SubscriptionStatus.ACTIVE: EntitlementState.ACTIVE,
    SubscriptionStatus.IN_GRACE_PERIOD: EntitlementState.GRACE_PERIOD,
    SubscriptionStatus.CANCELED: EntitlementState.CANCELED_UNTIL_PERIOD_END,
}

# Among sources granting the same value for the same time, prefer the user's own
# subscription, then household, then grants, then the free tier.
_SOURCE_PREFERENCE = {
    SourceType.SUBSCRIPTION: 3,
    SourceType.HOUSEHOLD: 2,
    SourceType.GRANT: 1,
    SourceType.FREE_TIER: 0,
}


@dataclass(frozen=True, slots=True)
class Source:
    type: SourceType
    id: str = ""
    store: Store | None = None


@dataclass(frozen=True, slots=True)
class EntitlementDecision:
    user_id: str
    feature: Feature
    granted: bool
    value: int | None = None
    source: Source | None = None
    state: EntitlementState | None = None
    plan_id: str | None = None
    expires_at: datetime | None = None
    valid_until: datetime | None = None
    denial: DenialReason | None = None
    # The store holds no state for the user (version 0): nothing was ever written about
    # them, so they are decided as a free user (as is a mistyped user id).
    user_never_seen: bool = False


@dataclass(frozen=True, slots=True)
class _Candidate:
    source: Source
    state: EntitlementState
    plan_id: str | None
    value: int | None
    until: datetime | None

    def sort_key(self) -> tuple[int, bool, int, float, int]:
        # Highest quota first; the free tier only when nothing else grants the feature
        # (a Premium user's shuffle play comes from Premium); then the longest lasting.
        return (
            self.value or 0,
            self.source.type is not SourceType.FREE_TIER,
            1 if self.until is None else 0,
            self.until.timestamp() if self.until is not None else 0.0,
            _SOURCE_PREFERENCE[self.source.type],
        )


class _Collector:
    """Gathers, for one feature, the sources granting it, the reasons it is not granted
    and the future times at which the answer could change."""

    def __init__(self, catalog: Catalog, feature: Feature, now: datetime) -> None:
        self.catalog = catalog
        self.feature = feature
        self.now = now
        self.candidates: list[_Candidate] = []
        self.denials: list[DenialReason] = []
        self.boundaries: list[datetime] = []

    def plan_subscription(
        self,
        sub: Subscription,
        role: HouseholdRole,
        source: Source,
        student_verified_until: datetime | None = None,
    ) -> None:
        """`student_verified_until`: the subscriber's student verification, which a
        student plan's subscription needs besides being paid for."""
        plan = self.catalog.plans.get(sub.plan_id)
        if plan is None or self.feature.id not in plan.features:
            if plan is not None and plan.premium:
                self.denials.append(DenialReason.PLAN_LACKS_FEATURE)
            return
        access = subscription_access(sub, self.now)
        if access.access is not Access.ENTITLED:
            self.denials.append(_ACCESS_DENIAL[access.access])
            return
        assert access.entitled_until is not None
        # Whether granted or denied for the role, the answer changes when access ends.
        self.boundaries.append(access.entitled_until)
        until = access.entitled_until
        if plan.requires_verified_student:
            # The store bills (and renews) the student plan whatever our verification
            # says; access to it lasts only while the student status is verified.
            if student_verified_until is None or student_verified_until <= self.now:
                self.denials.append(DenialReason.STUDENT_NOT_VERIFIED)
                return
            self.boundaries.append(student_verified_until)
            until = min(until, student_verified_until)
        plan_feature = plan.features[self.feature.id]
        if role not in plan_feature.roles:
            self.denials.append(DenialReason.HOUSEHOLD_ROLE)
            return
        self.candidates.append(
            _Candidate(
                source,
                _STATUS_STATE[sub.status],
                plan.id,
                plan_feature.value,
                until,
            )
        )

    def own_subscriptions(self, account: AccountState) -> None:
        for sub in account.subscriptions:
            self.plan_subscription(
                sub,
                HouseholdRole.MANAGER,
                Source(SourceType.SUBSCRIPTION, sub.subscription_id, sub.store),
                account.student_verified_until,
            )

    def household_subscriptions(self, household: Household) -> None:
        """The manager's subscriptions to plans shared with the household (size > 1)."""
        for sub in household.manager_subscriptions:
            plan = self.catalog.plans.get(sub.plan_id)
            if plan is not None and plan.household_size > 1:
                self.plan_subscription(
                    sub,
                    HouseholdRole.MEMBER,
                    Source(SourceType.HOUSEHOLD, household.household_id, sub.store),
                )

    def grant(self, grant: Grant) -> None:
        """A grant of the feature, or of a plan having it."""
        applies, value = self._grant_value(grant)
        if not applies:
            return
        now = self.now
        if grant.revoked_at is not None and grant.revoked_at > now:
            # A revocation taking effect later changes the answer then, whatever the
            # grant's state now (not started yet, expired or active).
            self.boundaries.append(grant.revoked_at)
        if grant.revoked_at is not None and grant.revoked_at <= now:
            self.denials.append(DenialReason.REVOKED)
        elif grant.starts_at > now:
            self.boundaries.append(grant.starts_at)
        elif grant.expires_at is not None and grant.expires_at <= now:
            self.denials.append(DenialReason.EXPIRED)
        else:
            ends = [t for t in (grant.expires_at, grant.revoked_at) if t is not None]
            until = min(ends, default=None)
            if until is not None:
                self.boundaries.append(until)
            self.candidates.append(
                _Candidate(
                    Source(SourceType.GRANT, grant.grant_id),
                    EntitlementState.ACTIVE,
                    grant.plan_id,
                    value,
                    until,
                )
            )

    def _grant_value(self, grant: Grant) -> tuple[bool, int | None]:
        """Whether the grant gives the feature, and the value it gives."""
        feature = self.feature
        if grant.plan_id is not None:
            plan = self.catalog.plans.get(grant.plan_id)
            if plan is None or feature.id not in plan.features:
                return False, None
            return True, plan.features[feature.id].value
        if grant.feature_id == feature.id:
            return True, grant.quota_value if feature.kind is FeatureKind.QUOTA else None
        return False, None

    def free_tier(self) -> None:
        free_plan = self.catalog.plans[self.catalog.free_plan_id]
        if self.feature.id in free_plan.features:
            self.candidates.append(
                _Candidate(
                    Source(SourceType.FREE_TIER),
                    EntitlementState.ACTIVE,
                    free_plan.id,
                    free_plan.features[self.feature.id].value,
                    None,
                )
            )

    def decision(self, account: AccountState) -> EntitlementDecision:
        """The best candidate, or the most specific denial; valid until the earliest
        future boundary."""
        feature = self.feature
        valid_until = min((t for t in self.boundaries if t > self.now), default=None)
        if not self.candidates:
            denial = min(
                self.denials or [DenialReason.NO_ENTITLING_SOURCE], key=_DENIAL_RANK.__getitem__
            )
            return EntitlementDecision(
                user_id=account.user_id,
                feature=feature,
                granted=False,
                valid_until=valid_until,
                denial=denial,
                user_never_seen=account.version == 0,
            )
        best = max(self.candidates, key=_Candidate.sort_key)
        return EntitlementDecision(
            user_id=account.user_id,
            feature=feature,
            granted=True,
            value=best.value if feature.kind is FeatureKind.QUOTA else None,
            source=best.source,
            state=best.state,
            plan_id=best.plan_id,
            expires_at=best.until,
            valid_until=valid_until,
            user_never_seen=account.version == 0,
        )


def decide_entitlement(
    catalog: Catalog, user: UserState, feature_id: str, now: datetime
) -> EntitlementDecision:
    """Decides whether the user has the feature at `now`. `feature_id` must exist in the
    catalog (callers validate input first).

    The sources are gathered in turn (the user's subscriptions, the household manager's
    shared plans, the grants, the free tier); the best candidate wins, or when none grants
    the feature, the most specific reason it is denied."""
    collect = _Collector(catalog, catalog.features[feature_id], now)
    account = user.account
    collect.own_subscriptions(account)
    if user.household is not None:
        collect.household_subscriptions(user.household)
    for grant in account.grants:
        collect.grant(grant)
    collect.free_tier()
    return collect.decision(account)


def decide_all_entitlements(
    catalog: Catalog, user: UserState, now: datetime
) -> list[EntitlementDecision]:
    """One decision per feature of the catalog, in catalog order."""
    return [decide_entitlement(catalog, user, feature_id, now) for feature_id in catalog.features]


@dataclass(frozen=True, slots=True)
class EligibleOffer:
    offer: Offer
    price_minor: int
    regular_price_minor: int
    currency: str
    experiment_arm: str | None


@dataclass(frozen=True, slots=True)
class IneligibleOffer:
    offer: Offer
    reason: IneligibilityReason
    detail: str


@dataclass(frozen=True, slots=True)
class OfferDecisions:
    eligible: tuple[EligibleOffer, ...]
    ineligible: tuple[IneligibleOffer, ...]
    valid_until: datetime | None


def decide_offers(
    catalog: Catalog, user: UserState, market: str, platform: Platform, now: datetime
) -> OfferDecisions:
    """Which offers the user may see in `market` on `platform` at `now`, best first, and
    for every other offer the first check that excluded it.

    Checks run in a fixed order (`_check_offer`): validity window, market, platform, the
    offer's own eligibility rules in catalog order, then the experiment arm (last, so that
    users who could never see the offer are not counted in the experiment).
    """
    facts = account_facts(
        user, catalog.premium_plan_ids, catalog.free_plan_id, now, catalog.household_plan_ids
    )
    market_info = catalog.markets.get(market)
    query = _OfferQuery(facts, user.account.user_id, market, market_info is not None, platform, now)
    boundaries: list[datetime] = [] if facts.changes_at is None else [facts.changes_at]
    eligible: list[EligibleOffer] = []
    ineligible: list[IneligibleOffer] = []
    for offer in catalog.offers:
        if offer.valid_until is not None and now < offer.valid_until:
            # Whatever excludes or admits the offer now, at its end it is excluded.
            boundaries.append(offer.valid_until)
        check = _check_offer(offer, query)
        boundaries.extend(check.recheck)
        if check.reason is not None:
            ineligible.append(IneligibleOffer(offer, check.reason, check.detail))
            continue
        assert market_info is not None
        eligible.append(
            EligibleOffer(
                offer=offer,
                price_minor=offer.prices[market],
                regular_price_minor=market_info.plan_prices[offer.plan_id],
                currency=market_info.currency,
                experiment_arm=check.arm_name,
            )
        )
    eligible.sort(key=lambda e: (-e.offer.priority, e.offer.id))
    return OfferDecisions(
        eligible=tuple(eligible),
        ineligible=tuple(ineligible),
        valid_until=min((t for t in boundaries if t > now), default=None),
    )


@dataclass(frozen=True, slots=True)
class _OfferQuery:
    """What every offer is checked against (decide_offers)."""

    facts: AccountFacts
    user_id: str
    market: str
    # The catalog sells in the market at all.
    known_market: bool
    platform: Platform
    now: datetime


@dataclass(frozen=True, slots=True)
class _OfferCheck:
    """The first check excluding an offer (`reason` None: none did), the times its answer
    could change by itself, and the experiment arm the user is in."""

    reason: IneligibilityReason | None = None
    detail: str = ""
    recheck: Sequence[datetime] = ()
    arm_name: str | None = None


def _check_offer(offer: Offer, query: _OfferQuery) -> _OfferCheck:
    now = query.now
    if offer.valid_from is not None and now < offer.valid_from:
        return _OfferCheck(
            IneligibilityReason.OUTSIDE_VALIDITY_WINDOW, "not started yet", (offer.valid_from,)
        )
    if offer.valid_until is not None and now >= offer.valid_until:
        return _OfferCheck(IneligibilityReason.OUTSIDE_VALIDITY_WINDOW, "ended")
    if not query.known_market or query.market not in offer.prices:
        return _OfferCheck(IneligibilityReason.MARKET_NOT_ELIGIBLE, f"not sold in {query.market}")
    if query.platform not in offer.platforms:
        return _OfferCheck(
            IneligibilityReason.PLATFORM_NOT_ELIGIBLE, f"not offered on {query.platform.value}"
        )
    ctx = RuleContext(query.facts, offer.group, query.market, query.platform, now)
    result, recheck = first_failure(offer.rules, ctx)
    if not result.eligible:
        assert result.reason is not None
        return _OfferCheck(result.reason, result.detail, recheck)
    if offer.experiment is None:
        return _OfferCheck(recheck=recheck)
    arm = offer.experiment.assign(query.user_id)
    if not arm.shows_offer:
        return _OfferCheck(
            IneligibilityReason.EXPERIMENT_ARM,
            f"experiment '{offer.experiment.id}' arm '{arm.name}'",
            recheck,
            arm.name,
        )
    return _OfferCheck(recheck=recheck, arm_name=arm.name)
