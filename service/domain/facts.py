"""What the offer eligibility rules know about a user (`AccountFacts`), derived once per
evaluation from their account state by named steps: their own premium subscriptions, the
household manager's shared plan, when grants and the student verification change, whether
they ever had premium, and their latest household change."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from service.domain.account import (
    Access,
    AccountState,
    Grant,
    HouseholdMembership,
    HouseholdRole,
    Subscription,
    UserState,
    subscription_access,
    subscription_ended_at,
)


@dataclass(frozen=True, slots=True)
class AccountFacts:
    """What the rules need to know about a user, derived once per evaluation."""

    ever_premium: bool
    redeemed_groups: frozenset[str]
    # Entitled to a premium plan now, or suspended (on hold, paused): not lapsed.
    currently_subscribed: bool
    # When the last premium access ended, for users who had premium and are lapsed.
    lapsed_since: datetime | None
    current_plan_id: str
    student_verified_until: datetime | None
    # Latest join or leave of any household (for the household-hopping cooldown).
    last_household_change: datetime | None
    # Earliest future time at which one of the facts above changes by itself.
    changes_at: datetime | None


def account_facts(
    user: UserState,
    premium_plan_ids: frozenset[str],
    free_plan_id: str,
    now: datetime,
    household_plan_ids: frozenset[str],
) -> AccountFacts:
    """`household_plan_ids`: the plans shared with household members (household size > 1);
    a manager's subscription to any other plan is not the member's plan."""
    account = user.account
    premium_subs = [s for s in account.subscriptions if s.plan_id in premium_plan_ids]
    standing = _own_standing(premium_subs, now)
    if standing.plan_until is None and user.household is not None:
        _add_household_plan(
            standing,
            user.household.manager_subscriptions,
            premium_plan_ids & household_plan_ids,
            now,
        )
    currently_subscribed = standing.plan_until is not None or standing.suspended
    change_times = [
        *standing.changes,
        *_grant_changes(account.grants, now),
        *_student_change(account.student_verified_until, now),
    ]
    return AccountFacts(
        ever_premium=_ever_premium(account, premium_subs, premium_plan_ids, now),
        redeemed_groups=frozenset(r.offer_group for r in account.redemptions),
        currently_subscribed=currently_subscribed,
        lapsed_since=None if currently_subscribed else max(standing.ended, default=None),
        current_plan_id=free_plan_id if standing.plan_id is None else standing.plan_id,
        student_verified_until=account.student_verified_until,
        last_household_change=_last_household_change(account.memberships),
        changes_at=min(change_times, default=None),
    )


@dataclass(slots=True)
class _Standing:
    """Where a user's premium subscriptions stand at one moment (account_facts' steps)."""

    # The current premium plan and when its access ends by itself; None: none entitles.
    plan_id: str | None = None
    plan_until: datetime | None = None
    # A premium subscription is on hold or paused: still a subscriber, not lapsed.
    suspended: bool = False
    # When each premium subscription that stopped entitling stopped.
    ended: list[datetime] = field(default_factory=list)
    # When an entitling subscription stops entitling by itself.
    changes: list[datetime] = field(default_factory=list)


def _own_standing(premium_subs: Iterable[Subscription], now: datetime) -> _Standing:
    standing = _Standing()
    for sub in premium_subs:
        access = subscription_access(sub, now)
        if access.access is Access.ENTITLED:
            # Several entitling subscriptions are rare (a store switch); the one lasting
            # longest is the user's current plan.
            assert access.entitled_until is not None
            standing.changes.append(access.entitled_until)
            if standing.plan_until is None or access.entitled_until > standing.plan_until:
                standing.plan_id, standing.plan_until = sub.plan_id, access.entitled_until
        elif access.access in (Access.ON_HOLD, Access.PAUSED):
            standing.suspended = True
        end = subscription_ended_at(sub, now)
        if end is not None:
            standing.ended.append(end)
    return standing


def _add_household_plan(
    standing: _Standing,
    manager_subscriptions: Iterable[Subscription],
    shared_premium_plan_ids: frozenset[str],
    now: datetime,
) -> None:
    """A member without a plan of their own has the manager's shared premium plan."""
    for sub in manager_subscriptions:
        access = subscription_access(sub, now)
        if access.access is Access.ENTITLED and sub.plan_id in shared_premium_plan_ids:
            assert access.entitled_until is not None
            standing.changes.append(access.entitled_until)
            standing.plan_id, standing.plan_until = sub.plan_id, access.entitled_until


def _grant_changes(grants: Iterable[Grant], now: datetime) -> list[datetime]:
    """When each grant starts, or ends, by itself."""
    changes = []
    for grant in grants:
        if grant.starts_at > now:
            changes.append(grant.starts_at)
        elif grant.expires_at is not None and grant.expires_at > now:
            changes.append(grant.expires_at)
    return changes


def _student_change(verified_until: datetime | None, now: datetime) -> list[datetime]:
    return [verified_until] if verified_until is not None and verified_until > now else []


def _ever_premium(
    account: AccountState,
    premium_subs: Collection[Subscription],
    premium_plan_ids: frozenset[str],
    now: datetime,
) -> bool:
    """A premium subscription (trials count), a premium plan grant once started (unless
    revoked before it started: a grant revoked later was held, as a refunded subscription
    was), or a household membership as a member."""
    return (
        bool(premium_subs)
        or any(
            g.plan_id in premium_plan_ids
            and g.starts_at <= now
            and (g.revoked_at is None or g.revoked_at > g.starts_at)
            for g in account.grants
        )
        or any(m.role is HouseholdRole.MEMBER for m in account.memberships)
    )


def _last_household_change(memberships: Iterable[HouseholdMembership]) -> datetime | None:
    """The user's latest own join or leave; seats of a manager's roster are the members'."""
    own = [m for m in memberships if m.member_user_id is None]
    return max(
        [m.joined_at for m in own] + [m.left_at for m in own if m.left_at is not None],
        default=None,
    )
