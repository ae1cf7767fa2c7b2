"""Small builders for account state, shared by the unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from service.catalog import load_catalog
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
from service.domain.catalog import Catalog, Experiment
from service.domain.decisions import EntitlementDecision, OfferDecisions
from service.domain.events import SubscriptionEvent
from service.domain.grants import GrantRequest
from service.domain.rules import Platform
from service.usecases.reads import Answer, Consistency, ReadService
from service.usecases.writes import (
    EventAnswer,
    GrantAnswer,
    GrantEntitlement,
    RecordSubscriptionEvent,
    RedeemAnswer,
    RedeemOffer,
    RevokeEntitlement,
    WriteService,
)

CATALOG: Catalog = load_catalog()
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
PREMIUM = "premium_individual"


def subscription(
    plan_id: str = PREMIUM,
    status: SubscriptionStatus = SubscriptionStatus.ACTIVE,
    *,
    subscription_id: str = "sub-1",
    store: Store = Store.WEB,
    period_end: datetime = NOW + 20 * DAY,
    grace_period_end: datetime | None = None,
    started_at: datetime = NOW - 40 * DAY,
    last_event_at: datetime | None = None,
) -> Subscription:
    return Subscription(
        subscription_id=subscription_id,
        plan_id=plan_id,
        status=status,
        store=store,
        started_at=started_at,
        current_period_end=period_end,
        grace_period_end=grace_period_end,
        last_event_at=last_event_at,
    )


def grant(
    *,
    grant_id: str = "grant-1",
    feature_id: str | None = None,
    plan_id: str | None = None,
    quota_value: int | None = None,
    starts_at: datetime = NOW - 5 * DAY,
    expires_at: datetime | None = NOW + 10 * DAY,
    revoked_at: datetime | None = None,
    kind: GrantKind = GrantKind.PROMOTIONAL,
) -> Grant:
    return Grant(
        grant_id=grant_id,
        kind=kind,
        starts_at=starts_at,
        feature_id=feature_id,
        plan_id=plan_id,
        quota_value=quota_value,
        expires_at=expires_at,
        revoked_at=revoked_at,
    )


def redemption(
    offer_id: str, group: str, *, at: datetime = NOW - 100 * DAY, store: Store = Store.WEB
) -> Redemption:
    return Redemption(offer_id=offer_id, offer_group=group, redeemed_at=at, store=store)


def membership(
    role: HouseholdRole = HouseholdRole.MEMBER,
    *,
    household_id: str = "hh-1",
    manager_user_id: str = "manager-1",
    joined_at: datetime = NOW - 100 * DAY,
    left_at: datetime | None = None,
) -> HouseholdMembership:
    return HouseholdMembership(
        household_id=household_id,
        role=role,
        manager_user_id=manager_user_id,
        joined_at=joined_at,
        left_at=left_at,
    )


def user(
    user_id: str = "user-1",
    *,
    subscriptions: Iterable[Subscription] = (),
    grants: Iterable[Grant] = (),
    redemptions: Iterable[Redemption] = (),
    memberships: Iterable[HouseholdMembership] = (),
    home_market: str | None = "US",
    student_verified_until: datetime | None = None,
    household: Household | None = None,
) -> UserState:
    return UserState(
        account=AccountState(
            user_id=user_id,
            home_market=home_market,
            subscriptions=tuple(subscriptions),
            grants=tuple(grants),
            redemptions=tuple(redemptions),
            memberships=tuple(memberships),
            student_verified_until=student_verified_until,
        ),
        household=household,
    )


def household_member(
    *manager_subscriptions: Subscription, user_id: str = "member-1", household_id: str = "hh-1"
) -> UserState:
    """A member of household `household_id` whose manager holds `manager_subscriptions`."""
    return user(
        user_id,
        memberships=[membership(household_id=household_id)],
        household=Household(
            household_id=household_id,
            manager_user_id="manager-1",
            manager_subscriptions=tuple(manager_subscriptions),
        ),
    )


def experiment_of(offer_id: str) -> Experiment:
    for offer in CATALOG.offers:
        if offer.id == offer_id:
            assert offer.experiment is not None
            return offer.experiment
    raise KeyError(offer_id)


def user_id_in_arm(offer_id: str, arm: str, prefix: str = "user") -> str:
    """The first user id `prefix-N` that the offer's experiment assigns to `arm`."""
    experiment = experiment_of(offer_id)
    for n in range(1000):
        candidate = f"{prefix}-{n}"
        if experiment.assign(candidate).name == arm:
            return candidate
    raise AssertionError(f"no user in arm {arm}")  # pragma: no cover


DEFAULT_CONSISTENCY = Consistency()


class SyncReads:
    """The read use cases (coroutines, served on the event loop) called synchronously, one
    event loop per call: for tests that drive them step by step."""

    def __init__(self, reads: ReadService) -> None:
        self.service = reads
        self.catalog = reads.catalog

    def get_entitlement(
        self, user_id: str, feature_id: str, consistency: Consistency = DEFAULT_CONSISTENCY
    ) -> Answer[EntitlementDecision]:
        return asyncio.run(self.service.get_entitlement(user_id, feature_id, consistency))

    def list_entitlements(
        self, user_id: str, consistency: Consistency = DEFAULT_CONSISTENCY
    ) -> Answer[list[EntitlementDecision]]:
        return asyncio.run(self.service.list_entitlements(user_id, consistency))

    def batch_get_entitlements(
        self, queries: Sequence[tuple[str, str]], consistency: Consistency = DEFAULT_CONSISTENCY
    ) -> Answer[list[EntitlementDecision]]:
        return asyncio.run(self.service.batch_get_entitlements(queries, consistency))

    def get_offers(
        self,
        user_id: str,
        market: str,
        platform: Platform | None,
        consistency: Consistency = DEFAULT_CONSISTENCY,
    ) -> Answer[OfferDecisions]:
        return asyncio.run(self.service.get_offers(user_id, market, platform, consistency))


class SyncWrites:
    """The write use cases (coroutines) called synchronously, one event loop per call."""

    def __init__(self, writes: WriteService) -> None:
        self.service = writes

    def record_event(self, user_id: str, event: SubscriptionEvent) -> EventAnswer:
        return asyncio.run(self.service.events.record(RecordSubscriptionEvent(user_id, event)))

    def grant(self, request_id: str, user_id: str, grant: GrantRequest) -> GrantAnswer:
        return asyncio.run(self.service.grants.grant(GrantEntitlement(request_id, user_id, grant)))

    def revoke(self, request_id: str, user_id: str, grant_id: str) -> GrantAnswer:
        command = RevokeEntitlement(request_id, user_id, grant_id)
        return asyncio.run(self.service.grants.revoke(command))

    def redeem(self, command: RedeemOffer) -> RedeemAnswer:
        return asyncio.run(self.service.redemptions.redeem(command))
