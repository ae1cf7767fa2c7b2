"""Read answers to protobuf: entitlements, offers, watch updates, change-stream
messages, history entries; and a read's consistency from protobuf."""

from __future__ import annotations

from collections.abc import Sequence

from entitlements.v1 import (
    admin_service_pb2,
    common_pb2,
    entitlement_service_pb2,
    offer_service_pb2,
)
from service.domain.catalog import FeatureKind, OfferKind
from service.domain.decisions import (
    DenialReason,
    EntitlementDecision,
    EntitlementState,
    OfferDecisions,
    SourceType,
)
from service.domain.rules import IneligibilityReason
from service.grpc_api.convert.common import (
    STORE_TO_PROTO,
    enum_map,
    set_timestamp,
)
from service.usecases.change_streams import ChangeMessage
from service.usecases.reads import Consistency
from service.usecases.watch import WatchReason, WatchUpdate
from storage.repository import HistoryEntry

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


_WATCH_REASON_TO_PROTO = enum_map(WatchReason, entitlement_service_pb2.WatchReason, "WATCH_REASON_")


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


def history_entry_to_proto(entry: HistoryEntry) -> admin_service_pb2.HistoryEntry:
    message = admin_service_pb2.HistoryEntry(
        kind=entry.kind, reference=entry.reference, version=entry.version, summary=entry.summary
    )
    set_timestamp(message.effective_at, entry.effective_at)
    set_timestamp(message.recorded_at, entry.recorded_at)
    return message
