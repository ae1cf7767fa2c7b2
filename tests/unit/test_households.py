"""The household and student verification domain functions (service.domain.households)."""

from __future__ import annotations

from datetime import datetime

import pytest

from service.domain.account import (
    AccountState,
    HouseholdRole,
    SubscriptionStatus,
    UserState,
)
from service.domain.errors import NotFound, PreconditionFailed, PreconditionReason
from service.domain.households import (
    active_seats,
    create_household,
    join_household,
    leave_household,
    managed_household,
    member_household,
    release_seat,
    reserve_seat,
    revoke_student,
    verify_student,
)
from service.domain.rules import AccountFacts, account_facts
from storage.repository import household_membership
from tests.unit.factories import CATALOG, DAY, NOW, subscription


def manager(plan: str = "premium_duo", **kwargs: object) -> AccountState:
    sub = subscription(plan, **kwargs)  # type: ignore[arg-type]
    return AccountState("boss", subscriptions=(sub,))


def facts(account: AccountState, now: datetime) -> AccountFacts:
    return account_facts(
        UserState(account),
        CATALOG.premium_plan_ids,
        CATALOG.free_plan_id,
        now,
        CATALOG.household_plan_ids,
    )


def reason(raised: pytest.ExceptionInfo[PreconditionFailed]) -> PreconditionReason:
    value = raised.value.reason
    assert isinstance(value, PreconditionReason)
    return value


def test_create_needs_a_current_household_plan() -> None:
    with pytest.raises(PreconditionFailed) as raised:
        create_household(manager("premium_individual"), CATALOG, "hh", NOW)
    assert reason(raised) is PreconditionReason.NOT_A_HOUSEHOLD_PLAN
    expired = manager(status=SubscriptionStatus.EXPIRED, period_end=NOW - DAY)
    with pytest.raises(PreconditionFailed):
        create_household(expired, CATALOG, "hh", NOW)

    created, plan = create_household(manager(), CATALOG, "hh", NOW)
    assert plan.id == "premium_duo"
    owned = managed_household(created)
    assert owned is not None and owned.household_id == "hh"
    # Not a member of their own household: reads do not treat the manager as one.
    assert household_membership(created) is None
    assert create_household(created, CATALOG, "hh", NOW)[0] == created
    with pytest.raises(PreconditionFailed) as raised:
        create_household(created, CATALOG, "other", NOW)
    assert reason(raised) is PreconditionReason.ALREADY_IN_HOUSEHOLD


def test_seats_respect_the_plan_size_and_release() -> None:
    boss, _ = create_household(manager(), CATALOG, "hh", NOW)
    with pytest.raises(NotFound):
        reserve_seat(boss, CATALOG, "elsewhere", "a", NOW)
    seated = reserve_seat(boss, CATALOG, "hh", "a", NOW)
    assert [s.member_user_id for s in active_seats(seated, "hh")] == ["a"]
    assert reserve_seat(seated, CATALOG, "hh", "a", NOW) == seated  # already seated
    with pytest.raises(PreconditionFailed) as raised:
        reserve_seat(seated, CATALOG, "hh", "b", NOW)  # duo: manager + 1
    assert reason(raised) is PreconditionReason.HOUSEHOLD_FULL

    released = release_seat(seated, "hh", "a", NOW + DAY)
    assert active_seats(released, "hh") == []
    assert any(s.left_at == NOW + DAY for s in released.memberships)
    assert release_seat(seated, "hh", "a", NOW, undo=True) == boss
    reserve_seat(released, CATALOG, "hh", "b", NOW + DAY)  # the seat is free again
    # Seats are the members' joins, not the manager's: no household cooldown for them.
    assert facts(seated, NOW).last_household_change == NOW
    assert facts(released, NOW + 2 * DAY).last_household_change == NOW


def test_join_and_leave_one_household_per_member() -> None:
    kid = AccountState("kid")
    joined = join_household(kid, "hh", "boss", NOW)
    membership = member_household(joined)
    assert membership is not None and membership.role is HouseholdRole.MEMBER
    assert household_membership(joined) == membership
    assert join_household(joined, "hh", "boss", NOW) == joined
    with pytest.raises(PreconditionFailed) as raised:
        join_household(joined, "other", "boss-2", NOW)
    assert reason(raised) is PreconditionReason.ALREADY_IN_HOUSEHOLD
    boss, _ = create_household(manager(), CATALOG, "hh-2", NOW)
    with pytest.raises(PreconditionFailed):
        join_household(boss, "hh", "someone", NOW)

    left = leave_household(joined, "hh", NOW + DAY)
    assert member_household(left) is None and household_membership(left) is None
    assert leave_household(left, "hh", NOW + 2 * DAY) == left
    assert facts(left, NOW + 2 * DAY).last_household_change == NOW + DAY
    join_household(left, "other", "boss-2", NOW + 2 * DAY)


def test_student_verification() -> None:
    verified = verify_student(AccountState("s"), NOW + 100 * DAY)
    assert facts(verified, NOW).student_verified_until == NOW + 100 * DAY
    assert revoke_student(verified).student_verified_until is None
