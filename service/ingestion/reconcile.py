"""Reconciliation with Google Play (`entitlements reconcile-play USER TOKEN...`): re-reads
each purchase's state from purchases.subscriptionsv2 and records it as an event, so that a
notification that never arrived (or was dead-lettered and lost its data) cannot leave the
user's access stale. Play has no "purchases of a user" query: the tokens come from the
app or from support (the purchase receipts); the purchase must name the user as its
obfuscatedExternalAccountId, or name nobody (then USER is taken as its owner).

The recorded event is the notification the state implies (ACTIVE: purchased, CANCELED,
IN_GRACE_PERIOD, ON_HOLD, PAUSED, EXPIRED), at the time of the reconciliation, under an id
derived from the token and the state: reconciling an unchanged purchase again is a
duplicate (the first reconciliation's event stands)."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime
from typing import Any

from service.bootstrap import build_application
from service.config import Settings
from service.domain.play_mapping import map_play
from service.ingestion.play import PlayDeveloperApi
from service.ingestion.runner import build_ingestion, play_api
from service.usecases.ingestion import IngestResult, Verdict

# subscriptionState -> the RTDN notificationType it implies.
STATE_NOTIFICATIONS = {
    "SUBSCRIPTION_STATE_ACTIVE": 4,
    "SUBSCRIPTION_STATE_CANCELED": 3,
    "SUBSCRIPTION_STATE_IN_GRACE_PERIOD": 6,
    "SUBSCRIPTION_STATE_ON_HOLD": 5,
    "SUBSCRIPTION_STATE_PAUSED": 10,
    "SUBSCRIPTION_STATE_EXPIRED": 13,
}


def reconciliation_message(
    package_name: str, token: str, resource: dict[str, Any], user_id: str, now: datetime
) -> dict[str, Any] | str:
    """The message map_play takes for the purchase's current state, or why there is none."""
    accounts = resource.get("externalAccountIdentifiers") or {}
    owner = accounts.get("obfuscatedExternalAccountId") if isinstance(accounts, dict) else None
    if owner is not None and owner != user_id:
        return f"the purchase belongs to another user ({owner})"
    state = resource.get("subscriptionState")
    kind = STATE_NOTIFICATIONS.get(state) if isinstance(state, str) else None
    if kind is None:
        return f"nothing to record for {state}"
    resource = {**resource, "externalAccountIdentifiers": {"obfuscatedExternalAccountId": user_id}}
    items = resource.get("lineItems") or []
    expiry = items[0].get("expiryTime") if items and isinstance(items[0], dict) else None
    digest = hashlib.sha256(f"{token}|{state}|{expiry}".encode()).hexdigest()[:32]
    return {
        "messageId": f"reconcile-{digest}",
        "notification": {
            "packageName": package_name,
            "eventTimeMillis": str(int(now.timestamp() * 1000)),
            "subscriptionNotification": {"notificationType": kind, "purchaseToken": token},
        },
        "subscription": resource,
    }


def reconcile_play(
    settings: Settings, user_id: str, tokens: list[str], api: PlayDeveloperApi | None = None
) -> list[tuple[str, str]]:
    """(token, what happened) for each token."""
    app = build_application(settings)
    api = api or play_api(settings)
    try:
        ingestion = build_ingestion(settings, app)

        async def run() -> list[tuple[str, str]]:
            done: list[tuple[str, str]] = []
            for token in tokens:
                resource = await asyncio.to_thread(
                    api.get_subscription, settings.play_package_name, token
                )
                message = reconciliation_message(
                    settings.play_package_name, token, resource, user_id, app.clock()
                )
                if isinstance(message, str):
                    done.append((token, message))
                    continue
                result: IngestResult = await ingestion.ingest(
                    "google_play", message["messageId"], message, map_play
                )
                if result.verdict is Verdict.CONFLICT:
                    # This state was reconciled before (at another time): recorded then.
                    done.append((token, "duplicate: this state was reconciled before"))
                    continue
                done.append((token, f"{result.verdict.value} {result.detail}".strip()))
            return done

        return asyncio.run(run())
    finally:
        app.close()


def failed(outcome: str) -> bool:
    return outcome.split(" ", 1)[0] == Verdict.RETRY.value
