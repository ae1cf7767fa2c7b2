"""Household and student verification RPCs through a real server: a member's decisions
follow the manager's plan (seen with the write's token), the plan's size limit, replays
of a request id, removal, and the student offer following verification."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from entitlements.v1 import common_pb2, offer_service_pb2
from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements.v1 import subscription_event_service_pb2_grpc as ev_grpc
from tests.integration.conftest import HARNESS_BACKENDS, NOW, Harness
from tests.integration.test_write_rpcs import DAY, details_of, entitled, event, ts

pytestmark = pytest.mark.parametrize("harness", HARNESS_BACKENDS, indirect=True)

FAMILY_ONLY = "family_content_filter"
PREMIUM = "ad_free_playback"


@pytest.fixture(scope="module")
def writes(harness: Harness) -> Iterator[ev_grpc.SubscriptionEventServiceStub]:
    yield ev_grpc.SubscriptionEventServiceStub(harness.admin_channel)


def subscribe(writes: ev_grpc.SubscriptionEventServiceStub, user_id: str, plan: str) -> None:
    writes.RecordSubscriptionEvent(
        event(user_id, f"{user_id}-buy", ev.SUBSCRIPTION_EVENT_TYPE_PURCHASED,
              NOW - DAY, NOW + 29 * DAY, plan=plan),
        timeout=10,
    )  # fmt: skip


def add(
    writes: ev_grpc.SubscriptionEventServiceStub,
    request_id: str,
    manager: str,
    household_id: str,
    member: str,
) -> ev.AddHouseholdMemberResponse:
    response: ev.AddHouseholdMemberResponse = writes.AddHouseholdMember(
        ev.AddHouseholdMemberRequest(
            request_id=request_id,
            manager_user_id=manager,
            household_id=household_id,
            member_user_id=member,
        ),
        timeout=10,
    )
    return response


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
