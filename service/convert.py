"""The one place that converts between protobuf messages and domain types."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from entitlements.v1 import (
    common_pb2,
    entitlement_service_pb2,
    offer_service_pb2,
)
from service.domain.account import Store
from service.domain.catalog import FeatureKind, OfferKind
from service.domain.decisions import (
    DenialReason,
    EntitlementDecision,
    EntitlementState,
    OfferDecisions,
    SourceType,
)
from service.domain.rules import IneligibilityReason, Platform
from service.reads import Consistency

_PLATFORM_FROM_PROTO: dict[int, Platform] = {
    common_pb2.PLATFORM_WEB: Platform.WEB,
    common_pb2.PLATFORM_IOS: Platform.IOS,
    common_pb2.PLATFORM_ANDROID: Platform.ANDROID,
    common_pb2.PLATFORM_DESKTOP: Platform.DESKTOP,
}
_STORE_TO_PROTO = {
    Store.WEB: common_pb2.STORE_WEB,
    Store.APP_STORE: common_pb2.STORE_APP_STORE,
    Store.GOOGLE_PLAY: common_pb2.STORE_GOOGLE_PLAY,
    Store.PARTNER: common_pb2.STORE_PARTNER,
}
_FEATURE_KIND_TO_PROTO = {
    FeatureKind.BOOLEAN: entitlement_service_pb2.FEATURE_KIND_BOOLEAN,
    FeatureKind.QUOTA: entitlement_service_pb2.FEATURE_KIND_QUOTA,
}
_SOURCE_TYPE_TO_PROTO = {
    SourceType.SUBSCRIPTION: entitlement_service_pb2.SOURCE_TYPE_SUBSCRIPTION,
    SourceType.GRANT: entitlement_service_pb2.SOURCE_TYPE_GRANT,
    SourceType.HOUSEHOLD: entitlement_service_pb2.SOURCE_TYPE_HOUSEHOLD,
    SourceType.FREE_TIER: entitlement_service_pb2.SOURCE_TYPE_FREE_TIER,
}
_STATE_TO_PROTO = {
    EntitlementState.ACTIVE: entitlement_service_pb2.ENTITLEMENT_STATE_ACTIVE,
    EntitlementState.TRIAL: entitlement_service_pb2.ENTITLEMENT_STATE_TRIAL,
    EntitlementState.GRACE_PERIOD: entitlement_service_pb2.ENTITLEMENT_STATE_GRACE_PERIOD,
    EntitlementState.CANCELED_UNTIL_PERIOD_END: (
        entitlement_service_pb2.ENTITLEMENT_STATE_CANCELED_UNTIL_PERIOD_END
    ),
}
_DENIAL_TO_PROTO = {
    DenialReason.NO_ENTITLING_SOURCE: entitlement_service_pb2.DENIAL_REASON_NO_ENTITLING_SOURCE,
    DenialReason.PLAN_LACKS_FEATURE: entitlement_service_pb2.DENIAL_REASON_PLAN_LACKS_FEATURE,
    DenialReason.HOUSEHOLD_ROLE: entitlement_service_pb2.DENIAL_REASON_HOUSEHOLD_ROLE,
    DenialReason.SUBSCRIPTION_ON_HOLD: entitlement_service_pb2.DENIAL_REASON_SUBSCRIPTION_ON_HOLD,
    DenialReason.SUBSCRIPTION_PAUSED: entitlement_service_pb2.DENIAL_REASON_SUBSCRIPTION_PAUSED,
    DenialReason.EXPIRED: entitlement_service_pb2.DENIAL_REASON_EXPIRED,
    DenialReason.REVOKED: entitlement_service_pb2.DENIAL_REASON_REVOKED,
}
_OFFER_KIND_TO_PROTO = {
    OfferKind.FREE_TRIAL: offer_service_pb2.OFFER_KIND_FREE_TRIAL,
    OfferKind.INTRO_PRICE: offer_service_pb2.OFFER_KIND_INTRO_PRICE,
    OfferKind.DISCOUNT: offer_service_pb2.OFFER_KIND_DISCOUNT,
    OfferKind.WINBACK: offer_service_pb2.OFFER_KIND_WINBACK,
    OfferKind.STUDENT: offer_service_pb2.OFFER_KIND_STUDENT,
}
# Proto enum value names are INELIGIBILITY_REASON_<DOMAIN NAME>; build the map by name so a
# reason added to the domain without a proto value fails at import, not at request time.
_INELIGIBILITY_TO_PROTO = {
    reason: offer_service_pb2.IneligibilityReason.Value(f"INELIGIBILITY_REASON_{reason.name}")
    for reason in IneligibilityReason
}


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
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
    )
    if decision.source is not None:
        source = message.source
        source.type = _SOURCE_TYPE_TO_PROTO[decision.source.type]
        source.id = decision.source.id
        if decision.source.store is not None:
            source.store = _STORE_TO_PROTO[decision.source.store]
    if decision.state is not None:
        message.state = _STATE_TO_PROTO[decision.state]
    if decision.denial is not None:
        message.denial_reason = _DENIAL_TO_PROTO[decision.denial]
    if decision.expires_at is not None:
        message.expires_at.FromDatetime(decision.expires_at)
    if decision.valid_until is not None:
        message.valid_until.FromDatetime(decision.valid_until)
    return message


def entitlements_to_proto(
    decisions: Sequence[EntitlementDecision],
) -> list[entitlement_service_pb2.Entitlement]:
    return [entitlement_to_proto(d) for d in decisions]


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
            message.available_until.FromDatetime(offer.valid_until)
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
        response.valid_until.FromDatetime(decisions.valid_until)
    return response
