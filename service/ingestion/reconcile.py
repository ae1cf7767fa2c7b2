"""Reconciliation with the stores that have an API for it.

Google Play (`entitlements reconcile-play USER TOKEN...`): re-reads
each purchase's state from purchases.subscriptionsv2 and records it as an event, so that a
notification that never arrived (or was dead-lettered and lost its data) cannot leave the
user's access stale. Play has no "purchases of a user" query: the tokens come from the
app or from support (the purchase receipts); the purchase must name the user as its
obfuscatedExternalAccountId, or name nobody (then USER is taken as its owner).

The recorded event is the notification the state implies (ACTIVE: purchased, CANCELED,
IN_GRACE_PERIOD, ON_HOLD, PAUSED, EXPIRED), at the time of the reconciliation, under an id
derived from the token and the state: reconciling an unchanged purchase again is a
duplicate (the first reconciliation's event stands).

App Store (`entitlements reconcile-app-store USER ORIGINAL_TRANSACTION_ID...`): reads each
purchase's status from the App Store Server API (Get All Subscription Statuses, behind
AppStoreServerApi), verifies its signed transaction and renewal info with the notifications'
verifier, and records the notification the status implies (active and renewing: SUBSCRIBED;
active, auto-renew off: DID_CHANGE_RENEWAL_STATUS; expired; billing retry; grace period;
revoked), the same way: an id from purchase and state, a repeat is a duplicate. The
transaction must name USER as its appAccountToken, or nobody."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime
from typing import Any

from service.bootstrap import build_application
from service.config import Settings
from service.domain.app_store_mapping import map_app_store
from service.domain.play_mapping import map_play
from service.ingestion.app_store_api import AppStorePurchaseNotFound, AppStoreServerApi
from service.ingestion.errors import NotVerifiable
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


# App Store: a subscription's status (Get All Subscription Statuses) -> the notification
# (type, subtype) it implies; 1 active depends on the renewal info's autoRenewStatus.
APP_STORE_STATUS_NOTIFICATIONS: dict[int, tuple[str, str | None]] = {
    2: ("EXPIRED", None),
    3: ("DID_FAIL_TO_RENEW", None),
    4: ("DID_FAIL_TO_RENEW", "GRACE_PERIOD"),
    5: ("REVOKE", None),
}


def app_store_reconciliation(
    status: int,
    transaction: dict[str, Any],
    renewal: dict[str, Any] | None,
    user_id: str,
    now: datetime,
) -> dict[str, Any] | str:
    """The decoded notification map_app_store takes for a subscription's verified current
    state (a status of Get All Subscription Statuses), or why there is none. Its id
    derives from the purchase and its state: reconciling it unchanged is a duplicate."""
    owner = transaction.get("appAccountToken")
    if owner and owner != user_id:
        return f"the purchase belongs to another user ({owner})"
    renewing = (renewal or {}).get("autoRenewStatus") == 1
    if status == 1:
        kind: tuple[str, str | None] = (
            ("SUBSCRIBED", "INITIAL_BUY")
            if renewing
            else ("DID_CHANGE_RENEWAL_STATUS", "AUTO_RENEW_DISABLED")
        )
    elif status in APP_STORE_STATUS_NOTIFICATIONS:
        kind = APP_STORE_STATUS_NOTIFICATIONS[status]
    else:
        return f"nothing to record for status {status}"
    original = transaction.get("originalTransactionId")
    expires = transaction.get("expiresDate")
    digest = hashlib.sha256(
        f"app_store|{original}|{status}|{renewing}|{expires}".encode()
    ).hexdigest()[:32]
    notification: dict[str, Any] = {
        "notificationType": kind[0],
        "notificationUUID": f"reconcile-{digest}",
        "signedDate": int(now.timestamp() * 1000),
        "transaction": {**transaction, "appAccountToken": user_id},
        "renewalInfo": renewal or {},
    }
    if kind[1] is not None:
        notification["subtype"] = kind[1]
    return notification


def reconcile_app_store(
    settings: Settings,
    user_id: str,
    original_transaction_ids: list[str],
    api: AppStoreServerApi | None = None,
) -> list[tuple[str, str]]:
    """(originalTransactionId, what happened) for each: its current state read from the
    App Store Server API, verified, recorded for `user_id`."""
    from service.ingestion.runner import app_store_api, app_store_verifier

    verifier = app_store_verifier(settings)
    api = api or app_store_api(settings)
    app = build_application(settings)
    try:
        ingestion = build_ingestion(settings, app)

        async def one(original: str) -> str:
            try:
                statuses = await asyncio.to_thread(api.subscription_statuses, original)
            except AppStorePurchaseNotFound as error:
                return f"not found: {error}"
            matching = [s for s in statuses if s.original_transaction_id == original]
            if not matching:
                return "not found: no subscription with this originalTransactionId"
            status = matching[0]
            try:
                transaction, renewal = await asyncio.to_thread(
                    verifier.verify_signed, status.signed_transaction, status.signed_renewal
                )
            except NotVerifiable as error:
                return f"refused: {error.reason}: {error}"
            notification = app_store_reconciliation(
                status.status, transaction, renewal, user_id, app.clock()
            )
            if isinstance(notification, str):
                return notification
            result = await ingestion.ingest(
                "app_store", notification["notificationUUID"], notification, map_app_store
            )
            if result.verdict is Verdict.CONFLICT:
                return "duplicate: this state was reconciled before"
            return f"{result.verdict.value} {result.detail}".strip()

        async def run() -> list[tuple[str, str]]:
            return [(original, await one(original)) for original in original_transaction_ids]

        return asyncio.run(run())
    finally:
        app.close()
