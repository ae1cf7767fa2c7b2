"""The stores' notification vocabularies mapped onto our event types.

A store integration receives App Store Server Notifications v2 and Google Play real-time
developer notifications (RTDN) and records each as one RecordSubscriptionEvent. This
table says which event type each notification becomes and where its payload comes from
(docs/WRITE_PATH.md shows the same tables). Every notification carries the
product (our plan_id) and the current expiry (current_period_end): the App Store in the
signed transaction info (productId, expiresDate), Google Play in the subscription
resource the integration fetches (purchases.subscriptionsv2: lineItems[].productId,
lineItems[].expiryTime). A notification mapped to None records nothing: it announces a
change that a later notification reports when it takes effect.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.domain.account import Store
from service.domain.events import EventType as E


@dataclass(frozen=True, slots=True)
class StoreMapping:
    store: Store
    notification: str  # notificationType (App Store) or the RTDN name (Google Play)
    subtype: str | None  # App Store subtype, or a condition; None: any
    event_type: E | None  # None: record nothing
    reads: str  # where the event's payload comes from


_A, _G = Store.APP_STORE, Store.GOOGLE_PLAY
_TX = "plan and period end from the transaction (productId, expiresDate)"

APP_STORE: tuple[StoreMapping, ...] = (
    StoreMapping(_A, "SUBSCRIBED", "INITIAL_BUY", E.PURCHASED,
                 _TX + "; offer_id from offerIdentifier"),
    StoreMapping(_A, "SUBSCRIBED", "INITIAL_BUY_FREE_TRIAL", E.TRIAL_STARTED,
                 _TX + " (offerDiscountType FREE_TRIAL); offer_id from offerIdentifier"),
    StoreMapping(_A, "SUBSCRIBED", "RESUBSCRIBE", E.PURCHASED, _TX),
    StoreMapping(_A, "DID_RENEW", None, E.RENEWED, _TX + " of the new transaction"),
    StoreMapping(_A, "DID_FAIL_TO_RENEW", "GRACE_PERIOD", E.RENEWAL_FAILED,
                 _TX + "; grace_period_end from renewalInfo.gracePeriodExpiresDate"),
    StoreMapping(_A, "DID_FAIL_TO_RENEW", None, E.ON_HOLD,
                 _TX + "; billing retry without grace: no access"),
    StoreMapping(_A, "GRACE_PERIOD_EXPIRED", None, E.GRACE_EXPIRED, _TX),
    StoreMapping(_A, "DID_CHANGE_RENEWAL_STATUS", "AUTO_RENEW_DISABLED", E.CANCELED, _TX),
    StoreMapping(_A, "DID_CHANGE_RENEWAL_STATUS", "AUTO_RENEW_ENABLED", E.UNCANCELED, _TX),
    StoreMapping(_A, "DID_CHANGE_RENEWAL_PREF", "UPGRADE", E.PLAN_CHANGED,
                 _TX + " of the upgrade (effective at once)"),
    StoreMapping(_A, "DID_CHANGE_RENEWAL_PREF", "DOWNGRADE", None,
                 "takes effect at the next renewal; DID_RENEW then carries the new plan"),
    StoreMapping(_A, "OFFER_REDEEMED", "INITIAL_BUY", E.PURCHASED,
                 _TX + "; offer_id from offerIdentifier"),
    StoreMapping(_A, "OFFER_REDEEMED", "RESUBSCRIBE", E.PURCHASED,
                 _TX + "; offer_id from offerIdentifier"),
    StoreMapping(_A, "OFFER_REDEEMED", "UPGRADE", E.PLAN_CHANGED,
                 _TX + "; offer_id from offerIdentifier"),
    StoreMapping(_A, "OFFER_REDEEMED", None, E.UNCANCELED,
                 _TX + "; offer_id from offerIdentifier (an active, renewing subscription; "
                 "the offer applies from the next renewal)"),
    StoreMapping(_A, "EXPIRED", None, E.EXPIRED, _TX + " (any subtype)"),
    StoreMapping(_A, "REFUND", None, E.REFUNDED,
                 "refunded_period_end from the refunded transaction's expiresDate"),
    StoreMapping(_A, "REFUND_REVERSED", None, E.REFUND_REVERSED,
                 "refunded_period_end from the transaction's expiresDate"),
    StoreMapping(_A, "REVOKE", None, E.REVOKED, _TX + " (Family Sharing access revoked)"),
    StoreMapping(_A, "RENEWAL_EXTENDED", None, E.PERIOD_EXTENDED,
                 "current_period_end from the extended expiresDate"),
)  # fmt: skip

_SUB = "plan and period end from subscriptionsv2 (lineItems[].productId, expiryTime)"

GOOGLE_PLAY: tuple[StoreMapping, ...] = (
    StoreMapping(_G, "SUBSCRIPTION_PURCHASED", None, E.PURCHASED,
                 _SUB + "; offer_id from lineItems[].offerDetails.offerId"),
    StoreMapping(_G, "SUBSCRIPTION_PURCHASED", "FREE_TRIAL", E.TRIAL_STARTED,
                 _SUB + " (the line item is in its free-trial phase)"),
    StoreMapping(_G, "SUBSCRIPTION_RENEWED", None, E.RENEWED, _SUB),
    StoreMapping(_G, "SUBSCRIPTION_RECOVERED", None, E.RESUMED,
                 _SUB + " (payment recovered from account hold)"),
    StoreMapping(_G, "SUBSCRIPTION_CANCELED", None, E.CANCELED, _SUB),
    StoreMapping(_G, "SUBSCRIPTION_RESTARTED", None, E.UNCANCELED, _SUB),
    StoreMapping(_G, "SUBSCRIPTION_IN_GRACE_PERIOD", None, E.RENEWAL_FAILED,
                 _SUB + "; grace_period_end from lineItems[].expiryTime (extended by grace)"),
    StoreMapping(_G, "SUBSCRIPTION_ON_HOLD", None, E.ON_HOLD, _SUB),
    StoreMapping(_G, "SUBSCRIPTION_PAUSED", None, E.PAUSED, _SUB),
    StoreMapping(_G, "SUBSCRIPTION_PAUSE_SCHEDULE_CHANGED", None, None,
                 "the pause starts at the period end; SUBSCRIPTION_PAUSED then reports it"),
    StoreMapping(_G, "SUBSCRIPTION_DEFERRED", None, E.PERIOD_EXTENDED,
                 "current_period_end from the deferred expiryTime"),
    StoreMapping(_G, "SUBSCRIPTION_REVOKED", None, E.REVOKED, _SUB),
    StoreMapping(_G, "SUBSCRIPTION_EXPIRED", None, E.EXPIRED, _SUB),
    StoreMapping(_G, "VOIDED_PURCHASE", None, E.REFUNDED,
                 "Voided Purchases notification (a refund without revocation): "
                 "refunded_period_end from the voided order's line item expiryTime"),
)  # fmt: skip

TABLE: tuple[StoreMapping, ...] = APP_STORE + GOOGLE_PLAY


def map_notification(store: Store, notification: str, subtype: str | None = None) -> StoreMapping:
    """The row for a store's notification: the one naming its subtype, else the one for
    any subtype. KeyError for a notification the table does not know."""
    rows = [r for r in TABLE if r.store is store and r.notification == notification]
    exact = [r for r in rows if subtype is not None and r.subtype == subtype]
    fallback = [r for r in rows if r.subtype is None]
    for row in (*exact, *fallback):
        return row
    raise KeyError(f"{store.value}: no mapping for {notification}/{subtype}")
