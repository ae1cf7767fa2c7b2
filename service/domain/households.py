"""Households and student verification as writes: pure functions of one user's state.

A household spans users, but a write is one transaction of one user, so each user's
account holds its own part:
- the manager's account: their MANAGER membership (the household) and the roster, one
  seat per member (a MANAGER-role membership naming `member_user_id`); the plan's size
  limit is checked against the roster in the manager's transaction;
- a member's account: their MEMBER membership, which reads follow to the manager's
  subscriptions (storage.repository.household_membership).
Adding a member reserves the seat first and then writes the membership (a refused
membership releases the seat); removing one ends the membership first, then the seat.
A member who left a household joins no other one within the catalog's
`household_join_cooldown_days` (checked with the membership, on the member's account).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from service.domain.account import (
    Access,
    AccountState,
    HouseholdMembership,
    HouseholdRole,
    subscription_access,
)
from service.domain.catalog import Catalog, Plan
from service.domain.errors import NotFound, PreconditionFailed, PreconditionReason


def household_plan(account: AccountState, catalog: Catalog, now: datetime) -> Plan | None:
    """The largest household plan (household_size > 1) the user's own subscriptions
    entitle now, or None."""
    plans = [
        plan
        for sub in account.subscriptions
        if subscription_access(sub, now).access is Access.ENTITLED
        and (plan := catalog.plans.get(sub.plan_id)) is not None
        and plan.household_size > 1
    ]
    return max(plans, key=lambda plan: plan.household_size, default=None)


def managed_household(account: AccountState) -> HouseholdMembership | None:
    """The household the user currently manages (their own MANAGER membership)."""
    for membership in account.memberships:
        if (
            membership.role is HouseholdRole.MANAGER
            and membership.member_user_id is None
            and membership.left_at is None
        ):
            return membership
    return None


def member_household(account: AccountState) -> HouseholdMembership | None:
    """The household the user currently belongs to as a member."""
    for membership in account.memberships:
        if membership.role is HouseholdRole.MEMBER and membership.left_at is None:
            return membership
    return None


def active_seats(account: AccountState, household_id: str) -> list[HouseholdMembership]:
    """The current seats of the roster of a household the user manages."""
    return [
        m
        for m in account.memberships
        if m.household_id == household_id and m.member_user_id is not None and m.left_at is None
    ]


def _plan_or_refuse(account: AccountState, catalog: Catalog, now: datetime) -> Plan:
    plan = household_plan(account, catalog, now)
    if plan is None:
        raise PreconditionFailed(
            PreconditionReason.NOT_A_HOUSEHOLD_PLAN,
            f"user:{account.user_id}",
            "no current subscription on a plan shared with a household (household_size > 1)",
        )
    return plan


def _in_household(user_id: str, description: str) -> PreconditionFailed:
    return PreconditionFailed(
        PreconditionReason.ALREADY_IN_HOUSEHOLD, f"user:{user_id}", description
    )


def create_household(
    account: AccountState, catalog: Catalog, household_id: str, now: datetime
) -> tuple[AccountState, Plan]:
    """The manager's state with a new household; unchanged if it already manages it."""
    plan = _plan_or_refuse(account, catalog, now)
    managed = managed_household(account)
    if managed is not None:
        if managed.household_id == household_id:
            return account, plan
        raise _in_household(account.user_id, f"already manages household {managed.household_id}")
    if member_household(account) is not None:
        raise _in_household(account.user_id, "is a member of another household")
    membership = HouseholdMembership(household_id, HouseholdRole.MANAGER, account.user_id, now)
    return dataclasses.replace(account, memberships=(*account.memberships, membership)), plan


def _managed_or_not_found(account: AccountState, household_id: str) -> HouseholdMembership:
    managed = managed_household(account)
    if managed is None or managed.household_id != household_id:
        raise NotFound(f"user {account.user_id} manages no household {household_id}")
    return managed


def reserve_seat(
    manager: AccountState, catalog: Catalog, household_id: str, member_user_id: str, now: datetime
) -> AccountState:
    """The manager's state with a seat for the member, within the plan's household size
    (manager included); unchanged if the member already has a seat."""
    _managed_or_not_found(manager, household_id)
    seats = active_seats(manager, household_id)
    if any(seat.member_user_id == member_user_id for seat in seats):
        return manager
    plan = _plan_or_refuse(manager, catalog, now)
    if len(seats) + 1 >= plan.household_size:
        raise PreconditionFailed(
            PreconditionReason.HOUSEHOLD_FULL,
            f"household:{household_id}",
            f"plan {plan.id} allows {plan.household_size} accounts, manager included",
        )
    seat = HouseholdMembership(
        household_id, HouseholdRole.MANAGER, manager.user_id, now, member_user_id=member_user_id
    )
    return dataclasses.replace(manager, memberships=(*manager.memberships, seat))


def release_seat(
    manager: AccountState,
    household_id: str,
    member_user_id: str,
    now: datetime,
    *,
    undo: bool = False,
) -> AccountState:
    """The manager's state without the member's current seat: ended at `now`, or with
    `undo` (an add whose membership was refused) dropped as if never reserved."""
    _managed_or_not_found(manager, household_id)
    kept: list[HouseholdMembership] = []
    for membership in manager.memberships:
        if (
            membership.household_id == household_id
            and membership.member_user_id == member_user_id
            and membership.left_at is None
        ):
            if not undo:
                kept.append(dataclasses.replace(membership, left_at=now))
        else:
            kept.append(membership)
    return dataclasses.replace(manager, memberships=tuple(kept))


def join_cooldown_end(
    member: AccountState, household_id: str, cooldown_days: int
) -> datetime | None:
    """Until when the member may join no household but `household_id`: the catalog's
    cooldown after their latest leave of another household (None: no cooldown). Coming
    back to the household one left is not hopping, so it is not held back."""
    if cooldown_days <= 0:
        return None
    left = [
        m.left_at
        for m in member.memberships
        if m.role is HouseholdRole.MEMBER
        and m.left_at is not None
        and m.household_id != household_id
    ]
    latest = max(left, default=None)
    return None if latest is None else latest + timedelta(days=cooldown_days)


def join_household(
    member: AccountState,
    household_id: str,
    manager_user_id: str,
    now: datetime,
    cooldown_days: int = 0,
) -> AccountState:
    """The member's state with a membership of the household (one household per user,
    none within `cooldown_days` of leaving another); unchanged if already a member."""
    current = member_household(member)
    if current is not None:
        if current.household_id == household_id:
            return member
        raise _in_household(member.user_id, "is a member of another household")
    if managed_household(member) is not None:
        raise _in_household(member.user_id, "manages a household")
    cooldown_end = join_cooldown_end(member, household_id, cooldown_days)
    if cooldown_end is not None and now < cooldown_end:
        raise PreconditionFailed(
            PreconditionReason.HOUSEHOLD_COOLDOWN,
            f"user:{member.user_id}",
            f"left a household less than {cooldown_days} days ago: may join another from "
            f"{cooldown_end.isoformat()}",
        )
    membership = HouseholdMembership(household_id, HouseholdRole.MEMBER, manager_user_id, now)
    return dataclasses.replace(member, memberships=(*member.memberships, membership))


def leave_household(member: AccountState, household_id: str, now: datetime) -> AccountState:
    """The member's state with their membership of the household ended at `now`;
    unchanged if not a current member."""
    memberships = tuple(
        dataclasses.replace(m, left_at=now)
        if m.role is HouseholdRole.MEMBER and m.household_id == household_id and m.left_at is None
        else m
        for m in member.memberships
    )
    return dataclasses.replace(member, memberships=memberships)


def verify_student(account: AccountState, verified_until: datetime) -> AccountState:
    return dataclasses.replace(account, student_verified_until=verified_until)


def revoke_student(account: AccountState) -> AccountState:
    return dataclasses.replace(account, student_verified_until=None)
