"""The one place that converts between protobuf messages and domain types."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from entitlements.v1 import (
    admin_service_pb2,
    common_pb2,
    entitlement_service_pb2,
    offer_service_pb2,
)
from entitlements.v1 import subscription_event_service_pb2 as events_pb2
from service.domain.account import Grant, GrantKind, Store, Subscription, SubscriptionStatus
from service.domain.catalog import FeatureKind, OfferKind
from service.domain.decisions import (
    DenialReason,
    EntitlementDecision,
    EntitlementState,
    OfferDecisions,
    SourceType,
)
from service.domain.errors import FieldViolation, InvalidRequest
from service.domain.events import EventOutcome, EventType, KeptEvent, SubscriptionEvent
from service.domain.grants import GrantRequest
from service.domain.rules import IneligibilityReason, Platform
from service.domain.validation import check_time
from service.usecases.change_streams import ChangeMessage
from service.usecases.reads import Consistency
from service.usecases.watch import WatchReason, WatchUpdate
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
from storage.repository import HistoryEntry

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

_Domain = TypeVar("_Domain", bound=enum.Enum)
_Proto = TypeVar("_Proto", bound=int)
V = TypeVar("V")


def enum_map(
    domain: type[_Domain], proto: _EnumTypeWrapper[_Proto], prefix: str
) -> dict[_Domain, _Proto]:
    """Each member of the domain enum paired with the proto enum value named
    `prefix + member.name` (Store.APP_STORE -> STORE_APP_STORE). Built once at import, so a
    domain member without a proto counterpart fails there (ValueError), not at request time."""
    names = set(proto.keys())
    missing = [prefix + member.name for member in domain if prefix + member.name not in names]
    if missing:
        raise ValueError(
            f"{proto.DESCRIPTOR.full_name} lacks {', '.join(missing)}: every member of "
            f"{domain.__qualname__} needs a proto value named {prefix}<member name>"
        )
    return {member: proto.Value(prefix + member.name) for member in domain}


def inverse(to_proto: Mapping[_Domain, int]) -> dict[int, _Domain]:
    """The proto -> domain direction of an `enum_map`."""
    return {value: member for member, value in to_proto.items()}


PLATFORM_TO_PROTO = enum_map(Platform, common_pb2.Platform, "PLATFORM_")
STORE_TO_PROTO = enum_map(Store, common_pb2.Store, "STORE_")
EVENT_TYPE_TO_PROTO = enum_map(
    EventType, events_pb2.SubscriptionEventType, "SUBSCRIPTION_EVENT_TYPE_"
)
GRANT_KIND_TO_PROTO = enum_map(GrantKind, events_pb2.GrantKind, "GRANT_KIND_")

_PLATFORM_FROM_PROTO = inverse(PLATFORM_TO_PROTO)
_STORE_FROM_PROTO = inverse(STORE_TO_PROTO)
_EVENT_TYPE_FROM_PROTO = inverse(EVENT_TYPE_TO_PROTO)
_GRANT_KIND_FROM_PROTO = inverse(GRANT_KIND_TO_PROTO)
_FEATURE_KIND_TO_PROTO = enum_map(FeatureKind, entitlement_service_pb2.FeatureKind, "FEATURE_KIND_")
_SOURCE_TYPE_TO_PROTO = enum_map(SourceType, entitlement_service_pb2.SourceType, "SOURCE_TYPE_")
_STATE_TO_PROTO = enum_map(
    EntitlementState, entitlement_service_pb2.EntitlementState, "ENTITLEMENT_STATE_"
)
_DENIAL_TO_PROTO = enum_map(DenialReason, entitlement_service_pb2.DenialReason, "DENIAL_REASON_")
_OFFER_KIND_TO_PROTO = enum_map(OfferKind, offer_service_pb2.OfferKind, "OFFER_KIND_")
_INELIGIBILITY_TO_PROTO = enum_map(
    IneligibilityReason, offer_service_pb2.IneligibilityReason, "INELIGIBILITY_REASON_"
)
_STATUS_TO_PROTO = enum_map(
    SubscriptionStatus, events_pb2.SubscriptionStatus, "SUBSCRIPTION_STATUS_"
)
_OUTCOME_TO_PROTO = enum_map(EventOutcome, events_pb2.EventOutcome, "EVENT_OUTCOME_")
_WATCH_REASON_TO_PROTO = enum_map(WatchReason, entitlement_service_pb2.WatchReason, "WATCH_REASON_")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def set_timestamp(field: Timestamp, value: datetime) -> None:
    """Sets a Timestamp field from an aware datetime. Four times cheaper than
    Timestamp.FromDatetime, which dominated building an entitlement answer (two per
    answer, 100 per batch)."""
    delta = value - _EPOCH
    field.seconds = delta.days * 86_400 + delta.seconds
    field.nanos = delta.microseconds * 1000


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    set_timestamp(ts, value)
    return ts


def platform_from_proto(value: int) -> Platform | None:
    """The domain platform, or None for PLATFORM_UNSPECIFIED and unknown values."""
    return _PLATFORM_FROM_PROTO.get(value)


def consistency_from_proto(message: common_pb2.ReadConsistency) -> Consistency:
    return Consistency(token=message.consistency_token, full=message.full_consistency)


def entitlement_to_proto(decision: EntitlementDecision) -> entitlement_service_pb2.Entitlement:
    message = entitlement_service_pb2.Entitlement(
        user_id=decision.user_id,
        feature_id=decision.feature.id,
        granted=decision.granted,
        quota_value=decision.value or 0,
        feature_kind=_FEATURE_KIND_TO_PROTO[decision.feature.kind],
        plan_id=decision.plan_id or "",
        user_never_seen=decision.user_never_seen,
    )
    if decision.source is not None:
        source = message.source
        source.type = _SOURCE_TYPE_TO_PROTO[decision.source.type]
        source.id = decision.source.id
        if decision.source.store is not None:
            source.store = STORE_TO_PROTO[decision.source.store]
    if decision.state is not None:
        message.state = _STATE_TO_PROTO[decision.state]
    if decision.denial is not None:
        message.denial_reason = _DENIAL_TO_PROTO[decision.denial]
    if decision.expires_at is not None:
        set_timestamp(message.expires_at, decision.expires_at)
    if decision.valid_until is not None:
        set_timestamp(message.valid_until, decision.valid_until)
    return message


def entitlements_to_proto(
    decisions: Sequence[EntitlementDecision],
) -> list[entitlement_service_pb2.Entitlement]:
    return [entitlement_to_proto(d) for d in decisions]


def watch_update_to_proto(
    update: WatchUpdate, catalog_version: str
) -> entitlement_service_pb2.WatchEntitlementsResponse:
    return entitlement_service_pb2.WatchEntitlementsResponse(
        entitlements=entitlements_to_proto(update.decisions),
        consistency_token=update.token,
        reason=_WATCH_REASON_TO_PROTO[update.reason],
        catalog_version=catalog_version,
        stale=update.stale,
    )


def change_message_to_proto(message: ChangeMessage) -> entitlement_service_pb2.WatchChangesResponse:
    response = entitlement_service_pb2.WatchChangesResponse(
        reset=message.reset, position=message.position
    )
    for change in message.changes:
        response.changes.add(
            user_id=change.user_id, version=change.version, consistency_token=change.token
        )
    return response


def offers_to_proto(
    decisions: OfferDecisions, include_ineligible: bool, catalog_version: str
) -> offer_service_pb2.GetOffersResponse:
    response = offer_service_pb2.GetOffersResponse(catalog_version=catalog_version)
    for eligible in decisions.eligible:
        offer = eligible.offer
        message = response.offers.add(
            offer_id=offer.id,
            plan_id=offer.plan_id,
            kind=_OFFER_KIND_TO_PROTO[offer.kind],
            duration_days=offer.duration_days,
            offer_group=offer.group,
            priority=offer.priority,
            experiment_id=offer.experiment.id if offer.experiment is not None else "",
            experiment_arm=eligible.experiment_arm or "",
        )
        message.offer_price.amount_minor = eligible.price_minor
        message.offer_price.currency_code = eligible.currency
        message.regular_price.amount_minor = eligible.regular_price_minor
        message.regular_price.currency_code = eligible.currency
        if offer.valid_until is not None:
            set_timestamp(message.available_until, offer.valid_until)
    if include_ineligible:
        for ineligible in decisions.ineligible:
            response.ineligible_offers.add(
                offer_id=ineligible.offer.id,
                plan_id=ineligible.offer.plan_id,
                kind=_OFFER_KIND_TO_PROTO[ineligible.offer.kind],
                reason=_INELIGIBILITY_TO_PROTO[ineligible.reason],
                detail=ineligible.detail,
            )
    if decisions.valid_until is not None:
        set_timestamp(response.valid_until, decisions.valid_until)
    return response


def store_from_proto(value: int) -> Store | None:
    """The domain store, or None for STORE_UNSPECIFIED and unknown values."""
    return _STORE_FROM_PROTO.get(value)


def optional_time(message: Any, field: str, path: str = "") -> datetime | None:
    """The timestamp field as an aware datetime, None when unset; INVALID_ARGUMENT naming
    the field when it is not a valid Timestamp (nanos 0 to 999,999,999) or not a time a
    request may carry (service.domain.validation: 1970 to 9999)."""
    value = _optional(message, field, path, "Timestamp", lambda ts: ts.ToDatetime(tzinfo=UTC))
    if value is not None:
        violations: list[FieldViolation] = []
        check_time(value, path + field, violations)
        if violations:
            raise InvalidRequest(violations)
    return value


def optional_duration(message: Any, field: str, path: str = "") -> timedelta | None:
    """The duration field as a timedelta, None when unset; INVALID_ARGUMENT naming the
    field when it is not a valid Duration: seconds beyond +-10,000 years, nanos beyond
    +-999,999,999, or nanos of the other sign than seconds (seconds=10, nanos=-1)."""
    return _optional(message, field, path, "Duration", _duration_to_timedelta)


# google.protobuf.Duration's range (duration.proto): about +-10,000 years.
_MAX_DURATION_SECONDS = 315_576_000_000


def _duration_to_timedelta(duration: Any) -> timedelta:
    seconds, nanos = duration.seconds, duration.nanos
    if (
        abs(seconds) > _MAX_DURATION_SECONDS
        or abs(nanos) > 999_999_999
        or (seconds > 0 and nanos < 0)
        or (seconds < 0 and nanos > 0)
    ):
        raise ValueError(f"not a valid Duration: seconds={seconds}, nanos={nanos}")
    value: timedelta = duration.ToTimedelta()
    return value


def _optional(
    message: Any, field: str, path: str, type_name: str, read: Callable[[Any], V]
) -> V | None:
    if not message.HasField(field):
        return None
    try:
        return read(getattr(message, field))
    except (ValueError, OverflowError) as error:
        raise InvalidRequest(
            [FieldViolation(path + field, f"not a valid google.protobuf.{type_name}")]
        ) from error


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


def history_entry_to_proto(entry: HistoryEntry) -> admin_service_pb2.HistoryEntry:
    message = admin_service_pb2.HistoryEntry(
        kind=entry.kind, reference=entry.reference, version=entry.version, summary=entry.summary
    )
    set_timestamp(message.effective_at, entry.effective_at)
    set_timestamp(message.recorded_at, entry.recorded_at)
    return message
