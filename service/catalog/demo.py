"""Demo users in the situations the service must tell apart, with times relative to now
so the demo means the same whenever it is seeded."""

from __future__ import annotations

from datetime import datetime, timedelta

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
)
from storage.repository import AccountRepository

DAY = timedelta(days=1)


def demo_accounts(now: datetime) -> list[AccountState]:
    """One account per situation; user ids say which."""

    def sub(
        subscription_id: str,
        plan_id: str,
        status: SubscriptionStatus,
        store: Store,
        started_days_ago: int,
        period_end_in_days: float,
        **extra: object,
    ) -> Subscription:
        return Subscription(
            subscription_id=subscription_id,
            plan_id=plan_id,
            status=status,
            store=store,
            started_at=now - started_days_ago * DAY,
            current_period_end=now + period_end_in_days * DAY,
            last_event_at=now - 1 * DAY,
            **extra,  # type: ignore[arg-type]
        )

    trial = Redemption("premium-individual-trial-1m", "trial", now - 10 * DAY, Store.APP_STORE)
    return [
        AccountState("demo-free", home_market="US"),
        AccountState(
            "demo-trial",
            home_market="SE",
            subscriptions=(
                sub("sub-trial", "premium_individual", SubscriptionStatus.TRIALING,
                    Store.APP_STORE, 10, 20, offer_id="premium-individual-trial-1m"),
            ),
            redemptions=(trial,),
        ),
        AccountState(
            "demo-active",
            home_market="GB",
            subscriptions=(
                sub("sub-active", "premium_individual", SubscriptionStatus.ACTIVE,
                    Store.WEB, 400, 12),
            ),
        ),
        AccountState(
            "demo-grace",
            home_market="DE",
            subscriptions=(
                sub("sub-grace", "premium_individual", SubscriptionStatus.IN_GRACE_PERIOD,
                    Store.GOOGLE_PLAY, 200, -2, grace_period_end=now + 5 * DAY),
            ),
        ),
        AccountState(
            "demo-canceled",
            home_market="FR",
            subscriptions=(
                sub("sub-canceled", "premium_individual", SubscriptionStatus.CANCELED,
                    Store.WEB, 90, 8, auto_renew=False),
            ),
        ),
        AccountState(
            "demo-lapsed",
            home_market="US",
            subscriptions=(
                sub("sub-lapsed", "premium_individual", SubscriptionStatus.EXPIRED,
                    Store.APP_STORE, 400, -45, auto_renew=False),
            ),
            redemptions=(
                Redemption("premium-individual-trial-1m", "trial", now - 400 * DAY,
                           Store.APP_STORE),
            ),
        ),
        AccountState(
            "demo-on-hold",
            home_market="BR",
            subscriptions=(
                sub("sub-on-hold", "premium_individual", SubscriptionStatus.ON_HOLD,
                    Store.GOOGLE_PLAY, 300, -10),
            ),
        ),
        AccountState(
            "demo-family-manager",
            home_market="SE",
            subscriptions=(
                sub("sub-family", "premium_family", SubscriptionStatus.ACTIVE,
                    Store.WEB, 700, 20),
            ),
            memberships=(
                HouseholdMembership("household-1", HouseholdRole.MANAGER,
                                    "demo-family-manager", now - 700 * DAY),
            ),
        ),
        AccountState(
            "demo-family-member",
            home_market="SE",
            memberships=(
                HouseholdMembership("household-1", HouseholdRole.MEMBER,
                                    "demo-family-manager", now - 100 * DAY),
            ),
        ),
        AccountState(
            "demo-student",
            home_market="US",
            student_verified_until=now + 200 * DAY,
        ),
        AccountState(
            "demo-promo",
            home_market="JP",
            grants=(
                Grant("grant-hifi", GrantKind.PROMOTIONAL, now - 3 * DAY,
                      feature_id="high_fidelity_audio", expires_at=now + 27 * DAY),
            ),
        ),
    ]  # fmt: skip


def seed_demo(repository: AccountRepository, now: datetime) -> list[str]:
    """Writes the demo accounts (replacing earlier demo state); returns their user ids."""
    accounts = demo_accounts(now)
    for account in accounts:

        def replace(_current: AccountState, account: AccountState = account) -> AccountState:
            return account

        repository.update(account.user_id, replace)
    return [a.user_id for a in accounts]
