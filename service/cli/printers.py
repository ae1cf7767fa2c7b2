"""What the commands print: answers of the service, and a user's history."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import UTC
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from entitlements.v1 import (
    admin_service_pb2,
    common_pb2,
    entitlement_service_pb2,
    offer_service_pb2,
)
from entitlements.v1 import subscription_event_service_pb2 as events_pb2

# ISO 4217 currencies without minor units among those a catalog is likely to use.
_ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW", "CLP", "ISK", "VND", "HUF", "TWD"})


def print_entitlement_answer(response: entitlement_service_pb2.GetEntitlementResponse) -> None:
    print_entitlement(response.entitlement)
    print(f"  catalog: {response.catalog_version}")
    note_never_seen([response.entitlement])


def print_entitlement_list(
    response: (
        entitlement_service_pb2.ListEntitlementsResponse
        | entitlement_service_pb2.BatchGetEntitlementsResponse
    ),
) -> None:
    for entitlement in response.entitlements:
        print_entitlement(entitlement)
    print(f"catalog: {response.catalog_version}")
    note_never_seen(response.entitlements)


def note_never_seen(entitlements: Iterable[entitlement_service_pb2.Entitlement]) -> None:
    """On stderr (stdout stays the answer): users the service holds no state for, whose
    answers are those of any free user; a mistyped user id looks exactly like that."""
    users = dict.fromkeys(e.user_id for e in entitlements if e.user_never_seen)
    for user_id in users:
        print(
            f"note: the service has never seen user {user_id!r} (nothing was ever written "
            "about them): answered as a free user. A mistyped user id?",
            file=sys.stderr,
        )


def print_watch_message(message: entitlement_service_pb2.WatchEntitlementsResponse) -> None:
    """One message of a watch as a block: why it came and its token, then the decisions."""
    reason = _enum(entitlement_service_pb2.WatchReason, message.reason, "WATCH_REASON_")
    stale = " (stale: the store could not be reached)" if message.stale else ""
    print(f"{reason}; consistency token: {message.consistency_token}{stale}")
    for entitlement in message.entitlements:
        print_entitlement(entitlement, indent="  ")
    print(f"  catalog: {message.catalog_version}")
    if message.reason == entitlement_service_pb2.WATCH_REASON_INITIAL:
        note_never_seen(message.entitlements)


def print_entitlement(e: entitlement_service_pb2.Entitlement, indent: str = "") -> None:
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
            line += f", expires {format_time(e.expires_at)}"
    else:
        reason = _enum(entitlement_service_pb2.DenialReason, e.denial_reason, "DENIAL_REASON_")
        line = f"{e.user_id} {e.feature_id}: DENIED ({reason})"
    if e.HasField("valid_until"):
        line += f"; valid until {format_time(e.valid_until)}"
    print(indent + line)


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
        print(f"valid until {format_time(response.valid_until)}")


def print_event_answer(
    request: events_pb2.RecordSubscriptionEventRequest,
    response: events_pb2.RecordSubscriptionEventResponse,
    read_back: str,
    remembered: bool,
) -> None:
    outcome = _enum(events_pb2.EventOutcome, response.outcome, "EVENT_OUTCOME_")
    print_written(
        f"event {request.event_id}: {outcome}", response.consistency_token, read_back, remembered
    )
    if response.HasField("subscription"):
        print_subscription(response.subscription)
    else:
        print("  kept; the subscription is not known yet (it applies when its start arrives)")


def print_written(kind: str, token: str, read_back: str, remembered: bool) -> None:
    """The write's outcome, its consistency token and the command that reads it back
    fresh from any server process (`read_back`, without the token)."""
    print(f"{kind}; consistency token: {token}")
    print(f"  read it back: {read_back} --consistency-token {token}")
    if remembered:
        print("  (reads of this user from this checkout pass the token by themselves)")


def print_subscription(sub: events_pb2.Subscription) -> None:
    status = _enum(events_pb2.SubscriptionStatus, sub.status, "SUBSCRIPTION_STATUS_")
    store = _enum(common_pb2.Store, sub.store, "STORE_")
    line = f"  subscription {sub.subscription_id}: {status} on {sub.plan_id} via {store}"
    line += f", period ends {exact_time(sub.current_period_end)}"
    if sub.HasField("grace_period_end"):
        line += f", grace ends {format_time(sub.grace_period_end)}"
    print(line + ("" if sub.auto_renew else ", not renewing"))


def print_grant(grant: events_pb2.Grant) -> None:
    target = grant.feature_id or f"plan {grant.plan_id}"
    kind = _enum(events_pb2.GrantKind, grant.kind, "GRANT_KIND_")
    quota = f" (quota {grant.quota_value})" if grant.quota_value else ""
    starts = format_time(grant.starts_at)
    line = f"  grant {grant.grant_id}: {kind} grant of {target}{quota} from {starts}"
    if grant.HasField("expires_at"):
        line += f" until {format_time(grant.expires_at)}"
    if grant.HasField("revoked_at"):
        line += f", revoked {format_time(grant.revoked_at)}"
    print(line)


def print_history(response: admin_service_pb2.GetUserHistoryResponse) -> None:
    print(f"history of {response.user_id} (version {response.version}), oldest first:")
    if response.total_entries > len(response.entries):
        print(f"  ({response.total_entries - len(response.entries)} older entries not shown)")
    if not response.entries:
        print("  (nothing recorded)")
    for entry in response.entries:
        print(
            f"  v{entry.version} {format_time(entry.recorded_at)} {entry.kind} {entry.reference} "
            f"(effective {format_time(entry.effective_at)}): {entry.summary}"
        )
    if response.subscription_events:
        print("subscription events kept, in fold order, with their effect now:")
    for kept in response.subscription_events:
        outcome = _enum(events_pb2.EventOutcome, kept.outcome, "EVENT_OUTCOME_")
        print(
            f"  {kept.subscription_id} {format_time(kept.occurred_at)} {kept.kind} "
            f"{kept.event_id}: {outcome} ({kept.why})"
        )
    if response.version == 0:
        note_never_seen_user(response.user_id)


def note_never_seen_user(user_id: str) -> None:
    print(
        f"note: the service has never seen user {user_id!r} (nothing was ever written about "
        "them). A mistyped user id?",
        file=sys.stderr,
    )


def _enum(enum_type: Any, value: int, prefix: str) -> str:
    """The proto enum value's name without `prefix`, in lower case (STORE_APP_STORE ->
    app_store); a value this build does not know (a newer server) as its number."""
    try:
        name: str = enum_type.Name(value)
    except ValueError:
        return f"unknown ({value})"
    return name.removeprefix(prefix).lower()


def format_time(ts: Timestamp) -> str:
    """To the second: what a person reads."""
    return ts.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds")


def exact_time(ts: Timestamp) -> str:
    """To the microsecond when not a whole second: a value to pass back exactly (a
    refund names the period it refunds by its exact end)."""
    moment = ts.ToDatetime(tzinfo=UTC)
    return moment.isoformat(timespec="seconds" if moment.microsecond == 0 else "microseconds")


def _money(money: common_pb2.Money) -> str:
    if money.currency_code in _ZERO_DECIMAL_CURRENCIES:
        return f"{money.amount_minor} {money.currency_code}"
    return f"{money.amount_minor / 100:.2f} {money.currency_code}"
