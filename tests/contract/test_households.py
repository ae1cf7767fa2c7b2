"""The storage contract: a user's household, read with their state (the manager's
current subscriptions). Every backend in conftest.BACKENDS must pass these unchanged.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from service.domain.account import (
    AccountState,
    Household,
    HouseholdMembership,
    HouseholdRole,
    Store,
    SubscriptionStatus,
)
from storage.repository import (
    AccountRepository,
)
from tests.contract.builders import (
    at,
    sub,
)
from tests.state_writes import AccountChange, write_state

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
    write_state(
        repository,
        "manager",
        lambda s: dataclasses.replace(s, subscriptions=MANAGER_SUBS, memberships=(manager,)),
    )


def test_active_member_gets_household_with_managers_current_subscriptions(
    repository: AccountRepository,
) -> None:
    setup_household(repository)
    write_state(repository, "member", member_of("hh-1", "manager"))
    assert repository.load("member").household == Household("hh-1", "manager", MANAGER_SUBS, 1)

    # The manager's subscriptions (and version) as they are now, not as they were when
    # the member joined.
    renewed = (dataclasses.replace(MANAGER_SUBS[0], current_period_end=at(60)),)
    write_state(repository, "manager", lambda s: dataclasses.replace(s, subscriptions=renewed))
    assert repository.load("member").household == Household("hh-1", "manager", renewed, 2)


def test_member_who_left_has_no_household(repository: AccountRepository) -> None:
    setup_household(repository)
    write_state(repository, "former", member_of("hh-1", "manager", left_at=at(-1)))
    assert repository.load("former").household is None


def test_first_current_membership_decides_the_household(repository: AccountRepository) -> None:
    setup_household(repository)
    write_state(repository, "mover", member_of("hh-0", "old-manager", left_at=at(-10)))
    write_state(repository, "mover", member_of("hh-1", "manager"))
    assert repository.load("mover").household == Household("hh-1", "manager", MANAGER_SUBS, 1)


def test_manager_has_no_household(repository: AccountRepository) -> None:
    setup_household(repository)
    assert repository.load("manager").household is None


def test_member_of_unknown_manager_gets_household_without_subscriptions(
    repository: AccountRepository,
) -> None:
    write_state(repository, "orphan", member_of("hh-9", "never-seen"))
    assert repository.load("orphan").household == Household("hh-9", "never-seen", ())
