"""What the commands print: answers of the service, and a user's history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from entitlements.v1 import common_pb2, entitlement_service_pb2, offer_service_pb2
from entitlements.v1 import subscription_event_service_pb2 as events_pb2
from storage.repository import HistoryEntry

# ISO 4217 currencies without minor units among those a catalog is likely to use.
_ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW", "CLP", "ISK", "VND", "HUF", "TWD"})


def print_entitlement_answer(response: entitlement_service_pb2.GetEntitlementResponse) -> None:
    print_entitlement(response.entitlement)
    print(f"  catalog: {response.catalog_version}")


def print_entitlement_list(response: entitlement_service_pb2.ListEntitlementsResponse) -> None:
    for entitlement in response.entitlements:
        print_entitlement(entitlement)
    print(f"catalog: {response.catalog_version}")


def print_entitlement(e: entitlement_service_pb2.Entitlement) -> None:
    if e.granted:
        value = (
            f" = {e.quota_value}"
            if e.feature_kind == entitlement_service_pb2.FEATURE_KIND_QUOTA
            else ""
        )
        source = _enum(entitlement_service_pb2.SourceType, e.source.type, "SOURCE_TYPE_")
        if e.source.id:
            source += f" {e.source.id}"
        if e.source.store:
            source += f" via {_enum(common_pb2.Store, e.source.store, 'STORE_')}"
        state = _enum(entitlement_service_pb2.EntitlementState, e.state, "ENTITLEMENT_STATE_")
        plan = e.plan_id or "-"
        line = f"{e.user_id} {e.feature_id}: GRANTED{value} ({state}, plan {plan}, from {source})"
        if e.HasField("expires_at"):
            line += f", expires {_time(e.expires_at)}"
    else:
        reason = _enum(entitlement_service_pb2.DenialReason, e.denial_reason, "DENIAL_REASON_")
        line = f"{e.user_id} {e.feature_id}: DENIED ({reason})"
    if e.HasField("valid_until"):
        line += f"; valid until {_time(e.valid_until)}"
    print(line)


def print_offers(
    request: offer_service_pb2.GetOffersRequest,
    response: offer_service_pb2.GetOffersResponse,
    platform: str,
) -> None:
    print(f"offers for {request.user_id} in {request.market} on {platform}:")
    if not response.offers:
        print("  (none)")
    for offer in response.offers:
        arm = (
            f", experiment {offer.experiment_id}/{offer.experiment_arm}"
            if offer.experiment_id
            else ""
        )
        print(
            f"  {offer.offer_id}: {_enum(offer_service_pb2.OfferKind, offer.kind, 'OFFER_KIND_')} "
            f"of {offer.plan_id} for {offer.duration_days} days at "
            f"{_money(offer.offer_price)} (then {_money(offer.regular_price)}/month){arm}"
        )
    if request.include_ineligible:
        print("not eligible:")
        for ineligible in response.ineligible_offers:
            reason = _enum(
                offer_service_pb2.IneligibilityReason, ineligible.reason, "INELIGIBILITY_REASON_"
            )
            print(f"  {ineligible.offer_id}: {reason} ({ineligible.detail})")
    if response.HasField("valid_until"):
        print(f"valid until {_time(response.valid_until)}")


def print_event_answer(
    request: events_pb2.RecordSubscriptionEventRequest,
    response: events_pb2.RecordSubscriptionEventResponse,
) -> None:
    outcome = _enum(events_pb2.EventOutcome, response.outcome, "EVENT_OUTCOME_")
    print_written(f"event {request.event_id}: {outcome}", response.consistency_token)
    print_subscription(response.subscription)


def print_written(kind: str, token: str) -> None:
    print(f"{kind}; consistency token: {token}")
    print("  (pass it to reads with --token to see this write from any server process)")


def print_subscription(sub: events_pb2.Subscription) -> None:
    status = _enum(events_pb2.SubscriptionStatus, sub.status, "SUBSCRIPTION_STATUS_")
    store = _enum(common_pb2.Store, sub.store, "STORE_")
    line = f"  subscription {sub.subscription_id}: {status} on {sub.plan_id} via {store}"
    line += f", period ends {_time(sub.current_period_end)}"
    if sub.HasField("grace_period_end"):
        line += f", grace ends {_time(sub.grace_period_end)}"
    print(line + ("" if sub.auto_renew else ", not renewing"))


def print_grant(grant: events_pb2.Grant) -> None:
    target = grant.feature_id or f"plan {grant.plan_id}"
    kind = _enum(events_pb2.GrantKind, grant.kind, "GRANT_KIND_")
    line = f"  grant {grant.grant_id}: {kind} grant of {target} from {_time(grant.starts_at)}"
    if grant.HasField("expires_at"):
        line += f" until {_time(grant.expires_at)}"
    if grant.HasField("revoked_at"):
        line += f", revoked {_time(grant.revoked_at)}"
    print(line)


def print_history(user_id: str, version: int, entries: Sequence[HistoryEntry]) -> None:
    print(f"history of {user_id} (version {version}), oldest first:")
    if not entries:
        print("  (nothing recorded)")
    for entry in entries:
        print(
            f"  v{entry.version} {entry.recorded_at.isoformat(timespec='seconds')} "
            f"{entry.kind} {entry.reference} (effective "
            f"{entry.effective_at.isoformat(timespec='seconds')}): {entry.summary}"
        )


def _enum(enum_type: Any, value: int, prefix: str) -> str:
    """The proto enum value's name without `prefix`, in lower case (STORE_APP_STORE ->
    app_store); a value this build does not know (a newer server) as its number."""
    try:
        name: str = enum_type.Name(value)
    except ValueError:
        return f"unknown ({value})"
    return name.removeprefix(prefix).lower()


def _time(ts: Timestamp) -> str:
    return ts.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds")


def _money(money: common_pb2.Money) -> str:
    if money.currency_code in _ZERO_DECIMAL_CURRENCIES:
        return f"{money.amount_minor} {money.currency_code}"
    return f"{money.amount_minor / 100:.2f} {money.currency_code}"
