"""Write requests to their commands (service.usecases.writes) and the answers back:
subscription events, grants, redemptions, households, student verification."""

from __future__ import annotations

from entitlements.v1 import admin_service_pb2
from entitlements.v1 import subscription_event_service_pb2 as events_pb2
from service.domain.account import Grant, Subscription, SubscriptionStatus
from service.domain.events import EventOutcome, KeptEvent, SubscriptionEvent
from service.domain.grants import GrantRequest
from service.grpc_api.convert.common import (
    EVENT_TYPE_TO_PROTO,
    GRANT_KIND_TO_PROTO,
    STORE_TO_PROTO,
    enum_map,
    inverse,
    optional_duration,
    optional_time,
    platform_from_proto,
    set_timestamp,
    store_from_proto,
)
from service.usecases.writes import (
    AddHouseholdMember,
    CreateHousehold,
    EventAnswer,
    GrantAnswer,
    GrantEntitlement,
    HouseholdAnswer,
    MembershipAnswer,
    RecordStudentVerification,
    RecordSubscriptionEvent,
    RedeemAnswer,
    RedeemOffer,
    RemoveHouseholdMember,
    RevokeEntitlement,
    RevokeStudentVerification,
    StudentAnswer,
)

_EVENT_TYPE_FROM_PROTO = inverse(EVENT_TYPE_TO_PROTO)


_GRANT_KIND_FROM_PROTO = inverse(GRANT_KIND_TO_PROTO)


_STATUS_TO_PROTO = enum_map(
    SubscriptionStatus, events_pb2.SubscriptionStatus, "SUBSCRIPTION_STATUS_"
)


_OUTCOME_TO_PROTO = enum_map(EventOutcome, events_pb2.EventOutcome, "EVENT_OUTCOME_")


def event_from_proto(request: events_pb2.RecordSubscriptionEventRequest) -> SubscriptionEvent:
    return SubscriptionEvent(
        event_id=request.event_id,
        subscription_id=request.subscription_id,
        store=store_from_proto(request.store),
        type=_EVENT_TYPE_FROM_PROTO.get(request.event_type),
        occurred_at=optional_time(request, "occurred_at"),
        plan_id=request.plan_id or None,
        current_period_end=optional_time(request, "current_period_end"),
        grace_period_end=optional_time(request, "grace_period_end"),
        offer_id=request.offer_id or None,
        market=request.market or None,
        refunded_period_end=optional_time(request, "refunded_period_end"),
    )


def grant_request_from_proto(request: events_pb2.GrantEntitlementRequest) -> GrantRequest:
    """The grant as the caller sent it (an unset start stays unset: it means "when
    recorded", decided by the use case, so a retry's fingerprint matches the first's)."""
    grant = request.grant
    target = grant.WhichOneof("target")
    # Ignored (the service sets it when revoking), but a malformed time is still refused.
    optional_time(grant, "revoked_at", "grant.")
    return GrantRequest(
        kind=_GRANT_KIND_FROM_PROTO.get(grant.kind),
        feature_id=grant.feature_id if target == "feature_id" else None,
        plan_id=grant.plan_id if target == "plan_id" else None,
        quota_value=grant.quota_value,
        starts_at=optional_time(grant, "starts_at", "grant."),
        expires_at=optional_time(grant, "expires_at", "grant."),
        duration=optional_duration(request, "duration"),
    )


def record_event_command(
    request: events_pb2.RecordSubscriptionEventRequest,
) -> RecordSubscriptionEvent:
    return RecordSubscriptionEvent(request.user_id, event_from_proto(request))


def grant_command(request: events_pb2.GrantEntitlementRequest) -> GrantEntitlement:
    return GrantEntitlement(request.request_id, request.user_id, grant_request_from_proto(request))


def revoke_command(request: events_pb2.RevokeEntitlementRequest) -> RevokeEntitlement:
    return RevokeEntitlement(request.request_id, request.user_id, request.grant_id)


def redeem_command(request: events_pb2.RedeemOfferRequest) -> RedeemOffer:
    return RedeemOffer(
        request_id=request.request_id,
        user_id=request.user_id,
        offer_id=request.offer_id,
        market=request.market,
        platform=platform_from_proto(request.platform),
        store=store_from_proto(request.store),
        subscription_id=request.subscription_id,
    )


def create_household_command(request: events_pb2.CreateHouseholdRequest) -> CreateHousehold:
    return CreateHousehold(request.request_id, request.manager_user_id)


def add_member_command(request: events_pb2.AddHouseholdMemberRequest) -> AddHouseholdMember:
    return AddHouseholdMember(
        request.request_id, request.manager_user_id, request.household_id, request.member_user_id
    )


def remove_member_command(
    request: events_pb2.RemoveHouseholdMemberRequest,
) -> RemoveHouseholdMember:
    return RemoveHouseholdMember(
        request.request_id, request.manager_user_id, request.household_id, request.member_user_id
    )


def student_verification_command(
    request: events_pb2.RecordStudentVerificationRequest,
) -> RecordStudentVerification:
    return RecordStudentVerification(
        request.request_id,
        request.user_id,
        optional_time(request, "verified_until"),
        request.provider_reference,
    )


def revoke_student_command(
    request: events_pb2.RevokeStudentVerificationRequest,
) -> RevokeStudentVerification:
    return RevokeStudentVerification(request.request_id, request.user_id)


def subscription_to_proto(sub: Subscription) -> events_pb2.Subscription:
    message = events_pb2.Subscription(
        subscription_id=sub.subscription_id,
        plan_id=sub.plan_id,
        status=_STATUS_TO_PROTO[sub.status],
        store=STORE_TO_PROTO[sub.store],
        auto_renew=sub.auto_renew,
    )
    set_timestamp(message.current_period_end, sub.current_period_end)
    if sub.grace_period_end is not None:
        set_timestamp(message.grace_period_end, sub.grace_period_end)
    if sub.last_event_at is not None:
        set_timestamp(message.last_event_at, sub.last_event_at)
    return message


def grant_to_proto(grant: Grant) -> events_pb2.Grant:
    message = events_pb2.Grant(
        grant_id=grant.grant_id,
        kind=GRANT_KIND_TO_PROTO[grant.kind],
        quota_value=grant.quota_value or 0,
    )
    if grant.feature_id is not None:
        message.feature_id = grant.feature_id
    elif grant.plan_id is not None:
        message.plan_id = grant.plan_id
    set_timestamp(message.starts_at, grant.starts_at)
    if grant.expires_at is not None:
        set_timestamp(message.expires_at, grant.expires_at)
    if grant.revoked_at is not None:
        set_timestamp(message.revoked_at, grant.revoked_at)
    return message


def event_answer_to_proto(answer: EventAnswer) -> events_pb2.RecordSubscriptionEventResponse:
    message = events_pb2.RecordSubscriptionEventResponse(
        outcome=_OUTCOME_TO_PROTO[answer.outcome], consistency_token=answer.consistency_token
    )
    if answer.subscription is not None:
        message.subscription.CopyFrom(subscription_to_proto(answer.subscription))
    return message


def event_effect_to_proto(kept: KeptEvent) -> admin_service_pb2.SubscriptionEventEffect:
    entry = kept.entry
    message = admin_service_pb2.SubscriptionEventEffect(
        subscription_id=entry.subscription_id,
        event_id=entry.event_id,
        kind=entry.kind,
        outcome=_OUTCOME_TO_PROTO[kept.effect.outcome],
        why=kept.effect.why,
    )
    set_timestamp(message.occurred_at, entry.occurred_at)
    set_timestamp(message.recorded_at, entry.recorded_at)
    return message


def grant_answer_to_proto(answer: GrantAnswer) -> events_pb2.GrantEntitlementResponse:
    return events_pb2.GrantEntitlementResponse(
        grant=grant_to_proto(answer.grant), consistency_token=answer.consistency_token
    )


def revoke_answer_to_proto(answer: GrantAnswer) -> events_pb2.RevokeEntitlementResponse:
    return events_pb2.RevokeEntitlementResponse(
        grant=grant_to_proto(answer.grant), consistency_token=answer.consistency_token
    )


def redeem_answer_to_proto(answer: RedeemAnswer) -> events_pb2.RedeemOfferResponse:
    return events_pb2.RedeemOfferResponse(
        subscription=subscription_to_proto(answer.subscription),
        consistency_token=answer.consistency_token,
    )


def household_answer_to_proto(answer: HouseholdAnswer) -> events_pb2.CreateHouseholdResponse:
    return events_pb2.CreateHouseholdResponse(
        household_id=answer.household_id,
        plan_id=answer.plan_id,
        household_size=answer.household_size,
        consistency_token=answer.consistency_token,
    )


def add_member_answer_to_proto(answer: MembershipAnswer) -> events_pb2.AddHouseholdMemberResponse:
    return events_pb2.AddHouseholdMemberResponse(
        household_id=answer.household_id,
        consistency_token=answer.consistency_token,
        manager_consistency_token=answer.manager_consistency_token,
    )


def remove_member_answer_to_proto(
    answer: MembershipAnswer,
) -> events_pb2.RemoveHouseholdMemberResponse:
    return events_pb2.RemoveHouseholdMemberResponse(
        household_id=answer.household_id,
        consistency_token=answer.consistency_token,
        manager_consistency_token=answer.manager_consistency_token,
    )


def student_answer_to_proto(
    answer: StudentAnswer,
) -> events_pb2.RecordStudentVerificationResponse:
    response = events_pb2.RecordStudentVerificationResponse(
        consistency_token=answer.consistency_token
    )
    if answer.verified_until is not None:
        set_timestamp(response.verified_until, answer.verified_until)
    return response


def revoke_student_answer_to_proto(
    answer: StudentAnswer,
) -> events_pb2.RevokeStudentVerificationResponse:
    return events_pb2.RevokeStudentVerificationResponse(consistency_token=answer.consistency_token)
