"""Household and student verification RPCs through a real server: a member's decisions
follow the manager's plan (seen with the write's token), the plan's size limit, replays
of a request id, removal, and the student offer following verification."""

from __future__ import annotations

import grpc
import pytest

from entitlements.v1 import common_pb2, offer_service_pb2
from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements.v1 import subscription_event_service_pb2_grpc as ev_grpc
from tests.support.harness import HARNESS_BACKENDS, NOW, Harness
from tests.support.rpcs import (
    DAY,
    FAMILY_ONLY,
    PREMIUM,
    add,
    details_of,
    entitled,
    event,
    remove,
    ts,
)

pytestmark = pytest.mark.parametrize("harness", HARNESS_BACKENDS, indirect=True)


@pytest.fixture(scope="module")
def writes(harness: Harness) -> ev_grpc.SubscriptionEventServiceStub:
    return ev_grpc.SubscriptionEventServiceStub(harness.admin_channel)


def subscribe(writes: ev_grpc.SubscriptionEventServiceStub, user_id: str, plan: str) -> None:
    writes.RecordSubscriptionEvent(
        event(user_id, f"{user_id}-buy", ev.SUBSCRIPTION_EVENT_TYPE_PURCHASED,
              NOW - DAY, NOW + 29 * DAY, plan=plan),
        timeout=10,
    )  # fmt: skip


def precondition_reason(error: grpc.RpcError) -> str:
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION, error
    info = details_of(error)[0]
    reason: str = info.reason  # type: ignore[attr-defined]
    return reason


def test_member_follows_the_managers_family_plan_until_removed(
    harness: Harness, writes: ev_grpc.SubscriptionEventServiceStub
) -> None:
    subscribe(writes, "hh-manager", "premium_family")
    created = writes.CreateHousehold(
        ev.CreateHouseholdRequest(request_id="hh-create-1", manager_user_id="hh-manager"),
        timeout=10,
    )
    assert created.household_id.startswith("household-")
    assert (created.plan_id, created.household_size) == ("premium_family", 6)
    # The same request id replays: the same household, the same token.
    again = writes.CreateHousehold(
        ev.CreateHouseholdRequest(request_id="hh-create-1", manager_user_id="hh-manager"),
        timeout=10,
    )
    assert again == created

    assert not entitled(harness, "hh-kid", FAMILY_ONLY)
    added = add(writes, "hh-add-1", "hh-manager", created.household_id, "hh-kid")
    assert entitled(harness, "hh-kid", FAMILY_ONLY, added.consistency_token)
    assert entitled(harness, "hh-kid", PREMIUM, added.consistency_token)
    # A retry with the same request id replays the first answer.
    assert add(writes, "hh-add-1", "hh-manager", created.household_id, "hh-kid") == added
    # The same id with another member is a different request.
    with pytest.raises(grpc.RpcError) as raised:
        add(writes, "hh-add-1", "hh-manager", created.household_id, "hh-other")
    assert raised.value.code() is grpc.StatusCode.ALREADY_EXISTS

    removed = writes.RemoveHouseholdMember(
        ev.RemoveHouseholdMemberRequest(
            request_id="hh-remove-1",
            manager_user_id="hh-manager",
            household_id=created.household_id,
            member_user_id="hh-kid",
        ),
        timeout=10,
    )
    assert not entitled(harness, "hh-kid", FAMILY_ONLY, removed.consistency_token)
    assert not entitled(harness, "hh-kid", PREMIUM, removed.consistency_token)
    # The manager keeps the plan.
    assert entitled(harness, "hh-manager", FAMILY_ONLY, removed.manager_consistency_token)


def test_household_size_one_household_per_member_and_no_manager_member(
    writes: ev_grpc.SubscriptionEventServiceStub,
) -> None:
    subscribe(writes, "duo-manager", "premium_duo")
    duo = writes.CreateHousehold(
        ev.CreateHouseholdRequest(request_id="duo-create", manager_user_id="duo-manager"),
        timeout=10,
    )
    assert duo.household_size == 2
    add(writes, "duo-add-1", "duo-manager", duo.household_id, "duo-partner")
    with pytest.raises(grpc.RpcError) as raised:
        add(writes, "duo-add-2", "duo-manager", duo.household_id, "duo-third")
    assert precondition_reason(raised.value) == "HOUSEHOLD_FULL"

    # One household per member: the partner cannot join a second one, and the refused
    # add leaves no seat behind (a member still fits there afterwards).
    subscribe(writes, "duo2-manager", "premium_duo")
    duo2 = writes.CreateHousehold(
        ev.CreateHouseholdRequest(request_id="duo2-create", manager_user_id="duo2-manager"),
        timeout=10,
    )
    with pytest.raises(grpc.RpcError) as raised:
        add(writes, "duo2-add-1", "duo2-manager", duo2.household_id, "duo-partner")
    assert precondition_reason(raised.value) == "ALREADY_IN_HOUSEHOLD"
    # The refusal is kept with the request id: a retry is refused the same way.
    with pytest.raises(grpc.RpcError) as raised:
        add(writes, "duo2-add-1", "duo2-manager", duo2.household_id, "duo-partner")
    assert precondition_reason(raised.value) == "ALREADY_IN_HOUSEHOLD"
    add(writes, "duo2-add-2", "duo2-manager", duo2.household_id, "duo2-partner")

    with pytest.raises(grpc.RpcError) as raised:
        add(writes, "duo-add-3", "duo-manager", duo.household_id, "duo-manager")
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    # A single-account plan cannot hold a household.
    subscribe(writes, "solo-manager", "premium_individual")
    with pytest.raises(grpc.RpcError) as raised:
        writes.CreateHousehold(
            ev.CreateHouseholdRequest(request_id="solo-create", manager_user_id="solo-manager"),
            timeout=10,
        )
    assert precondition_reason(raised.value) == "NOT_A_HOUSEHOLD_PLAN"
    # A household that the manager does not manage.
    with pytest.raises(grpc.RpcError) as raised:
        add(writes, "solo-add", "solo-manager", duo.household_id, "someone")
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND


def offer_ids(harness: Harness, user_id: str, token: str) -> set[str]:
    response = harness.offers.GetOffers(
        offer_service_pb2.GetOffersRequest(
            user_id=user_id,
            market="US",
            platform=common_pb2.PLATFORM_WEB,
            consistency=common_pb2.ReadConsistency(consistency_token=token),
        ),
        timeout=5,
    )
    return {offer.offer_id for offer in response.offers}


def test_student_verification_makes_the_student_offer_eligible_until_revoked(
    harness: Harness, writes: ev_grpc.SubscriptionEventServiceStub
) -> None:
    assert "premium-student-12m" not in offer_ids(harness, "student-1", "")
    request = ev.RecordStudentVerificationRequest(
        request_id="student-verify-1",
        user_id="student-1",
        verified_until=ts(NOW + 300 * DAY),
        provider_reference="provider-check-42",
    )
    verified = writes.RecordStudentVerification(request, timeout=10)
    assert verified.verified_until.ToDatetime().date() == (NOW + 300 * DAY).date()
    assert "premium-student-12m" in offer_ids(harness, "student-1", verified.consistency_token)
    assert writes.RecordStudentVerification(request, timeout=10) == verified

    revoked = writes.RevokeStudentVerification(
        ev.RevokeStudentVerificationRequest(request_id="student-revoke-1", user_id="student-1"),
        timeout=10,
    )
    assert "premium-student-12m" not in offer_ids(harness, "student-1", revoked.consistency_token)

    past = ev.RecordStudentVerificationRequest(
        request_id="student-verify-2",
        user_id="student-1",
        verified_until=ts(NOW - DAY),
        provider_reference="provider-check-43",
    )
    with pytest.raises(grpc.RpcError) as raised:
        writes.RecordStudentVerification(past, timeout=10)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def household_of(
    writes: ev_grpc.SubscriptionEventServiceStub, manager: str, plan: str = "premium_family"
) -> str:
    subscribe(writes, manager, plan)
    created = writes.CreateHousehold(
        ev.CreateHouseholdRequest(request_id=f"{manager}-create", manager_user_id=manager),
        timeout=10,
    )
    household_id: str = created.household_id
    return household_id


@pytest.mark.parametrize(
    ("change", "manager_keeps_premium"),
    [("downgrade", True), ("expiry", False), ("refund", False)],
)
def test_a_managers_downgrade_expiry_or_refund_ends_the_members_access(
    harness: Harness,
    writes: ev_grpc.SubscriptionEventServiceStub,
    change: str,
    manager_keeps_premium: bool,
) -> None:
    """The member's access is the manager's household plan: it ends with the plan, seen
    by a read of the member with the manager's write token; the membership stays, so a
    manager back on a household plan shares it again."""
    manager, member = f"{change}-manager", f"{change}-member"
    household_id = household_of(writes, manager)
    added = add(writes, f"{change}-add", manager, household_id, member)
    assert entitled(harness, member, FAMILY_ONLY, added.consistency_token)
    assert entitled(harness, member, PREMIUM, added.consistency_token)

    end = NOW + 29 * DAY
    kinds = {
        "downgrade": event(manager, f"{manager}-down", ev.SUBSCRIPTION_EVENT_TYPE_PLAN_CHANGED,
                           NOW - DAY / 2, end, plan="premium_individual"),
        "expiry": event(manager, f"{manager}-exp", ev.SUBSCRIPTION_EVENT_TYPE_EXPIRED,
                        NOW - DAY / 2, end, plan="premium_family"),
        "refund": event(manager, f"{manager}-ref", ev.SUBSCRIPTION_EVENT_TYPE_REFUNDED,
                        NOW - DAY / 2, end, plan="premium_family", refunded_period_end=ts(end)),
    }  # fmt: skip
    changed = writes.RecordSubscriptionEvent(kinds[change], timeout=10)
    assert changed.outcome == ev.EVENT_OUTCOME_APPLIED
    token = changed.consistency_token
    assert not entitled(harness, member, FAMILY_ONLY, token)
    assert not entitled(harness, member, PREMIUM, token)
    assert entitled(harness, manager, PREMIUM, token) is manager_keeps_premium
    # No household plan: nobody new can be added.
    with pytest.raises(grpc.RpcError) as raised:
        add(writes, f"{change}-add-2", manager, household_id, f"{change}-member-2")
    assert precondition_reason(raised.value) == "NOT_A_HOUSEHOLD_PLAN"

    if change == "downgrade":
        back = writes.RecordSubscriptionEvent(
            event(manager, f"{manager}-up", ev.SUBSCRIPTION_EVENT_TYPE_PLAN_CHANGED,
                  NOW - DAY / 4, end, plan="premium_family"),
            timeout=10,
        )  # fmt: skip
        assert entitled(harness, member, FAMILY_ONLY, back.consistency_token)


def test_the_join_cooldown_holds_back_another_household_not_the_same_one(
    writes: ev_grpc.SubscriptionEventServiceStub,
) -> None:
    """The example catalog's household_join_cooldown_days (30): a member removed from a
    household cannot join another one at once; the refused add keeps no seat; coming back
    to the household one left is allowed."""
    first = household_of(writes, "cool-manager-1")
    second = household_of(writes, "cool-manager-2", "premium_duo")
    add(writes, "cool-add-1", "cool-manager-1", first, "hopper")
    remove(writes, "cool-remove-1", "cool-manager-1", first, "hopper")
    with pytest.raises(grpc.RpcError) as raised:
        add(writes, "cool-add-2", "cool-manager-2", second, "hopper")
    assert precondition_reason(raised.value) == "HOUSEHOLD_COOLDOWN"
    assert "hopper" in str(details_of(raised.value))
    # The refused add released its seat: the Duo's one seat is still free.
    add(writes, "cool-add-3", "cool-manager-2", second, "duo-newcomer")
    add(writes, "cool-add-4", "cool-manager-1", first, "hopper")


def test_a_request_id_the_member_used_elsewhere_leaves_no_seat_behind(
    writes: ev_grpc.SubscriptionEventServiceStub,
) -> None:
    """A failure between the seat (manager's account) and the membership (member's): the
    member's account already holds this request id for another add (ALREADY_EXISTS, every
    retry too). Before the fix the seat stayed, and the Duo was full forever after."""
    first = household_of(writes, "reuse-manager-1")
    second = household_of(writes, "reuse-manager-2", "premium_duo")
    add(writes, "reused-request", "reuse-manager-1", first, "reuse-member")
    for _attempt in range(2):
        with pytest.raises(grpc.RpcError) as raised:
            add(writes, "reused-request", "reuse-manager-2", second, "reuse-member")
        assert raised.value.code() is grpc.StatusCode.ALREADY_EXISTS
    add(writes, "reuse-add-2", "reuse-manager-2", second, "reuse-partner")


def entitlement(harness: Harness, user_id: str, token: str) -> es.Entitlement:
    response = harness.entitlements.GetEntitlement(
        es.GetEntitlementRequest(
            user_id=user_id,
            feature_id=PREMIUM,
            consistency=common_pb2.ReadConsistency(consistency_token=token),
        ),
        timeout=5,
    )
    result: es.Entitlement = response.entitlement
    return result


def test_a_student_plan_renewal_without_verification_is_recorded_but_grants_nothing(
    harness: Harness, writes: ev_grpc.SubscriptionEventServiceStub
) -> None:
    """The store renews the student plan whatever our verification says: the renewal is
    recorded (APPLIED, the paid period moves on), and the plan's features are granted only
    while the student status is verified, until its end at the latest."""
    user, period_end, renewed_end = "renewing-student", NOW + 5 * DAY, NOW + 35 * DAY
    verify = ev.RecordStudentVerificationRequest(
        request_id=f"{user}-verify", user_id=user, verified_until=ts(NOW + 20 * DAY),
        provider_reference="provider-check-1",
    )  # fmt: skip
    writes.RecordStudentVerification(verify, timeout=10)
    bought = writes.RecordSubscriptionEvent(
        event(user, f"{user}-buy", ev.SUBSCRIPTION_EVENT_TYPE_PURCHASED, NOW - 25 * DAY,
              period_end, plan="premium_student"), timeout=10)  # fmt: skip
    granted = entitlement(harness, user, bought.consistency_token)
    assert granted.granted
    assert granted.expires_at.ToDatetime() == period_end.replace(tzinfo=None)

    renewed = writes.RecordSubscriptionEvent(
        event(user, f"{user}-renew", ev.SUBSCRIPTION_EVENT_TYPE_RENEWED, NOW - DAY,
              renewed_end, plan="premium_student"), timeout=10)  # fmt: skip
    assert renewed.outcome == ev.EVENT_OUTCOME_APPLIED
    # The verification ends before the renewed period: so does access.
    capped = entitlement(harness, user, renewed.consistency_token)
    assert capped.granted
    assert capped.expires_at.ToDatetime() == (NOW + 20 * DAY).replace(tzinfo=None)
    assert capped.valid_until == capped.expires_at

    revoked = writes.RevokeStudentVerification(
        ev.RevokeStudentVerificationRequest(request_id=f"{user}-revoke", user_id=user),
        timeout=10,
    )
    denied = entitlement(harness, user, revoked.consistency_token)
    assert not denied.granted
    assert denied.denial_reason == es.DENIAL_REASON_STUDENT_NOT_VERIFIED
    # A later renewal changes nothing about that; a new verification restores access.
    again = writes.RecordSubscriptionEvent(
        event(user, f"{user}-renew-2", ev.SUBSCRIPTION_EVENT_TYPE_RENEWED, NOW - DAY / 2,
              renewed_end, plan="premium_student"), timeout=10)  # fmt: skip
    assert not entitlement(harness, user, again.consistency_token).granted
    reverified = writes.RecordStudentVerification(
        ev.RecordStudentVerificationRequest(
            request_id=f"{user}-verify-2", user_id=user, verified_until=ts(NOW + 300 * DAY),
            provider_reference="provider-check-2",
        ),
        timeout=10,
    )  # fmt: skip
    restored = entitlement(harness, user, reverified.consistency_token)
    assert restored.granted
    assert restored.expires_at.ToDatetime() == renewed_end.replace(tzinfo=None)
