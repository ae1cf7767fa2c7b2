"""Redeeming an offer: re-check eligibility and start the trial or offer subscription,
as one pure function so the store can run it inside the write transaction."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from service.domain.account import (
    AccountState,
    Redemption,
    Store,
    Subscription,
    SubscriptionStatus,
    UserState,
)
from service.domain.catalog import Catalog, Offer, OfferKind
from service.domain.decisions import decide_offers
from service.domain.errors import PreconditionFailed, PreconditionReason
from service.domain.rules import Platform


def first_period(offer: Offer) -> timedelta:
    """The first period of a subscription an offer starts: the offer's duration from the
    catalog (a free trial's length, or the span billed at the offer price: 365 days for
    the yearly student offer). The catalog has no separate billing period; a store that
    bills an offer monthly reports each charge as RENEWED with its own period end."""
    return timedelta(days=offer.duration_days)


def redeem_offer(
    user: UserState,
    catalog: Catalog,
    offer_id: str,
    market: str,
    platform: Platform,
    store: Store,
    subscription_id: str,
    now: datetime,
) -> tuple[AccountState, Subscription]:
    """The account with the offer redeemed, or PreconditionFailed naming the first rule
    that excludes it (reason: the IneligibilityReason name). Runs against the state read
    inside the write transaction, so of concurrent redemptions of a once-per-group offer
    only the first can pass."""
    decisions = decide_offers(catalog, user, market, platform, now)
    ineligible = next((i for i in decisions.ineligible if i.offer.id == offer_id), None)
    if ineligible is not None:
        raise PreconditionFailed(
            reason=ineligible.reason,
            subject=f"offers/{offer_id}",
            description=ineligible.detail,
        )
    eligible = next(e for e in decisions.eligible if e.offer.id == offer_id)
    account = user.account
    if any(s.subscription_id == subscription_id for s in account.subscriptions):
        raise PreconditionFailed(
            reason=PreconditionReason.SUBSCRIPTION_EXISTS,
            subject=f"subscriptions/{subscription_id}",
            description="a subscription with this id already exists",
        )
    offer = eligible.offer
    trial = offer.kind is OfferKind.FREE_TRIAL
    subscription = Subscription(
        subscription_id=subscription_id,
        plan_id=offer.plan_id,
        status=SubscriptionStatus.TRIALING if trial else SubscriptionStatus.ACTIVE,
        store=store,
        started_at=now,
        current_period_end=now + first_period(offer),
        last_event_at=now,
        offer_id=offer.id,
    )
    account = dataclasses.replace(
        account,
        subscriptions=(*account.subscriptions, subscription),
        redemptions=(*account.redemptions, Redemption(offer.id, offer.group, now, store)),
        home_market=account.home_market or market,
    )
    return account, subscription
