"""The household and student verification domain functions (service.domain.households)."""

from __future__ import annotations

from datetime import datetime

import pytest

from service.domain.account import (
    AccountState,
    Household,
    HouseholdRole,
    SubscriptionStatus,
    UserState,
)
from service.domain.decisions import DenialReason, decide_entitlement
from service.domain.errors import NotFound, PreconditionFailed, PreconditionReason
from service.domain.facts import AccountFacts, account_facts
from service.domain.households import (
    active_seats,
    create_household,
    join_cooldown_end,
    join_household,
    leave_household,
    managed_household,
    member_household,
    release_seat,
    reserve_seat,
    revoke_student,
    verify_student,
)
from service.usecases.tokens import household_behind, issue_token, parse_token
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
    assert owned is not None
    assert owned.household_id == "hh"
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
    assert membership is not None
    assert membership.role is HouseholdRole.MEMBER
    assert household_membership(joined) == membership
    assert join_household(joined, "hh", "boss", NOW) == joined
    with pytest.raises(PreconditionFailed) as raised:
        join_household(joined, "other", "boss-2", NOW)
    assert reason(raised) is PreconditionReason.ALREADY_IN_HOUSEHOLD
    boss, _ = create_household(manager(), CATALOG, "hh-2", NOW)
    with pytest.raises(PreconditionFailed):
        join_household(boss, "hh", "someone", NOW)

    left = leave_household(joined, "hh", NOW + DAY)
    assert member_household(left) is None
    assert household_membership(left) is None
    assert leave_household(left, "hh", NOW + 2 * DAY) == left
    assert facts(left, NOW + 2 * DAY).last_household_change == NOW + DAY
    join_household(left, "other", "boss-2", NOW + 2 * DAY)  # no cooldown by default


def test_the_catalogs_join_cooldown_holds_back_another_household() -> None:
    cooldown = CATALOG.household_join_cooldown_days
    assert cooldown == 30  # the example catalog's
    left = leave_household(join_household(AccountState("kid"), "hh", "boss", NOW), "hh", NOW)
    assert join_cooldown_end(left, "other", cooldown) == NOW + 30 * DAY
    with pytest.raises(PreconditionFailed) as raised:
        join_household(left, "other", "boss-2", NOW + 29 * DAY, cooldown)
    assert reason(raised) is PreconditionReason.HOUSEHOLD_COOLDOWN
    assert raised.value.subject == "user:kid"
    # From the cooldown's end on, and back into the household one left at any time.
    assert member_household(join_household(left, "other", "boss-2", NOW + 30 * DAY, cooldown))
    assert member_household(join_household(left, "hh", "boss", NOW + DAY, cooldown))
    # The latest leave counts; a current member is refused for being one, not cooled.
    back = join_household(left, "hh", "boss", NOW + DAY, cooldown)
    again = leave_household(back, "hh", NOW + 10 * DAY)
    assert join_cooldown_end(again, "other", cooldown) == NOW + 40 * DAY
    with pytest.raises(PreconditionFailed) as raised:
        join_household(back, "other", "boss-2", NOW + 100 * DAY, cooldown)
    assert reason(raised) is PreconditionReason.ALREADY_IN_HOUSEHOLD
    # A manager's seats are not leaves of the manager.
    boss, _ = create_household(manager(), CATALOG, "hh-2", NOW)
    freed = release_seat(reserve_seat(boss, CATALOG, "hh-2", "a", NOW), "hh-2", "a", NOW)
    assert join_cooldown_end(freed, "hh-3", cooldown) is None


def test_a_managers_token_is_behind_a_household_read_at_an_older_manager_version() -> None:
    member = AccountState("kid", version=3)
    read_at_5 = UserState(member, Household("hh", "boss", (subscription("premium_duo"),), 5))
    boss_5, boss_6 = parse_token(issue_token("boss", 5)), parse_token(issue_token("boss", 6))
    assert not household_behind(boss_5, read_at_5)
    assert household_behind(boss_6, read_at_5)
    # Another user's token, no token, or no household: nothing to wait for.
    assert not household_behind(parse_token(issue_token("stranger", 99)), read_at_5)
    assert not household_behind(None, read_at_5)
    assert not household_behind(boss_6, UserState(member))


def student(verified_until: datetime | None, **kwargs: object) -> UserState:
    sub = subscription("premium_student", **kwargs)  # type: ignore[arg-type]
    return UserState(AccountState("s", subscriptions=(sub,), student_verified_until=verified_until))


def test_the_student_plan_entitles_only_while_the_student_status_is_verified() -> None:
    """A renewal of the student plan is recorded whatever the verification (the store
    billed it); the decision grants its features only until the verification ends."""
    period_end = NOW + 20 * DAY
    assert CATALOG.plans["premium_student"].requires_verified_student
    verified = decide_entitlement(CATALOG, student(NOW + 200 * DAY), "offline_downloads", NOW)
    assert verified.granted
    assert verified.expires_at == period_end
    # Verification ending inside the paid period: access (and the decision) end with it.
    ending = decide_entitlement(CATALOG, student(NOW + 5 * DAY), "offline_downloads", NOW)
    assert ending.granted
    assert ending.expires_at == ending.valid_until == NOW + 5 * DAY
    after = decide_entitlement(CATALOG, student(NOW + 5 * DAY), "offline_downloads", NOW + 6 * DAY)
    assert not after.granted
    assert after.denial is DenialReason.STUDENT_NOT_VERIFIED
    # The denial changes by itself when the paid period ends (then: expired).
    assert after.valid_until == period_end
    revoked = decide_entitlement(CATALOG, student(None), "offline_downloads", NOW)
    assert not revoked.granted
    assert revoked.denial is DenialReason.STUDENT_NOT_VERIFIED
    # The free tier's features stay; other plans need no verification.
    assert decide_entitlement(CATALOG, student(None), "shuffle_play", NOW).granted
    individual = UserState(AccountState("i", subscriptions=(subscription(),)))
    assert decide_entitlement(CATALOG, individual, "offline_downloads", NOW).granted


def test_student_verification() -> None:
    verified = verify_student(AccountState("s"), NOW + 100 * DAY)
    assert facts(verified, NOW).student_verified_until == NOW + 100 * DAY
    assert revoke_student(verified).student_verified_until is None
