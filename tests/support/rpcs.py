"""Requests and reads through the `harness` server: timestamps, subscription events,
whether a feature is entitled, the details of a refused call."""

from __future__ import annotations

from datetime import datetime, timedelta

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from entitlements.v1 import common_pb2, entitlement_service_pb2
from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements.v1 import subscription_event_service_pb2_grpc as ev_grpc
from tests.support.harness import Harness

DAY = timedelta(days=1)


def ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def entitled(harness: Harness, user_id: str, feature: str, token: str = "") -> bool:
    response = harness.entitlements.GetEntitlement(
        entitlement_service_pb2.GetEntitlementRequest(
            user_id=user_id,
            feature_id=feature,
            consistency=common_pb2.ReadConsistency(consistency_token=token),
        ),
        timeout=5,
    )
    return response.entitlement.granted


def event(
    user_id: str,
    event_id: str,
    type_: int,
    at: datetime,
    period_end: datetime,
    plan: str = "premium_individual",
    **extra: object,
) -> ev.RecordSubscriptionEventRequest:
    request = ev.RecordSubscriptionEventRequest(
        event_id=event_id,
        user_id=user_id,
        subscription_id=f"{user_id}-sub",
        store=common_pb2.STORE_GOOGLE_PLAY,
        event_type=type_,  # type: ignore[arg-type]
        occurred_at=ts(at),
        plan_id=plan,
        current_period_end=ts(period_end),
        **extra,  # type: ignore[arg-type]
    )
    return request


def details_of(error: grpc.RpcError) -> list[object]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    out: list[object] = []
    for detail in status.details:
        for kind in (
            error_details_pb2.BadRequest,
            error_details_pb2.ErrorInfo,
            error_details_pb2.PreconditionFailure,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                out.append(message)
    return out


FAMILY_ONLY = "family_content_filter"
PREMIUM = "ad_free_playback"


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


def remove(
    writes: ev_grpc.SubscriptionEventServiceStub,
    request_id: str,
    manager: str,
    household_id: str,
    member: str,
) -> ev.RemoveHouseholdMemberResponse:
    response: ev.RemoveHouseholdMemberResponse = writes.RemoveHouseholdMember(
        ev.RemoveHouseholdMemberRequest(
            request_id=request_id,
            manager_user_id=manager,
            household_id=household_id,
            member_user_id=member,
        ),
        timeout=10,
    )
    return response
