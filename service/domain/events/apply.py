"""Recording one event: keep it, re-fold the subscription, compact a long life, rebase on a row
an older server wrote; and the effects of every kept event."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from service.domain.account import (
    AccountState,
    Redemption,
    StoredEvent,
    Subscription,
)
from service.domain.account import SubscriptionStatus as S
from service.domain.catalog import Catalog
from service.domain.events.effects import effect_of
from service.domain.events.entries import (
    _decode_payload,
    _dumps,
    compact,
    encode_fold,
    entry_key,
    fold,
    sort_entries,
    stored_event,
)
from service.domain.events.fold import Fold, RefundLine, subscription_of

# Events stamped further ahead than this of the service's clock are refused: one bogus
# future event would make every real event of the subscription look stale.
from service.domain.events.model import (
    COMPACT_ABOVE,
    KEEP_RECENT,
    SNAPSHOT_KIND,
    EventEffect,
    EventOutcome,
    EventResult,
    EventType,
    Key,
    SubscriptionEvent,
)


def snapshot_of_row(sub: Subscription, recorded_at: datetime) -> StoredEvent:
    """A subscription row kept without events (written before events were kept, or by
    RedeemOffer) as a snapshot entry: the fold its row describes."""
    at = sub.last_event_at or sub.started_at
    ref = f"row:{sub.subscription_id}"
    status_key: Key = (at, -1, ref)
    status = sub.status
    refunded = status is S.REFUNDED
    if refunded:
        status = underlying_status(sub)
    kind = {
        S.TRIALING: EventType.TRIAL_STARTED,
        S.ACTIVE: EventType.RENEWED,
        S.IN_GRACE_PERIOD: EventType.RENEWAL_FAILED,
        S.ON_HOLD: EventType.ON_HOLD,
        S.PAUSED: EventType.PAUSED,
        S.CANCELED: EventType.CANCELED,
        S.EXPIRED: EventType.EXPIRED,
        S.REVOKED: EventType.EXPIRED,
    }[status]
    end = sub.current_period_end
    f = Fold(
        events=0,
        first=((sub.started_at, -1, ref), sub.store),
        offer_id=sub.offer_id,
        status=(status_key, kind, sub.grace_period_end if status is S.IN_GRACE_PERIOD else None),
        plan=((True, status_key), sub.plan_id),
        period=(end, status_key),
        # The row does not say which periods were paid: its period counts as paid unless
        # it is refunded (then a later paid period must end the refund).
        paid=None if refunded or status is S.TRIALING else (end, status_key),
        known_ends=((end, status_key),),
        refunds=((end, RefundLine(status_key, True, status_key)),) if refunded else (),
        revoked=status_key if sub.status is S.REVOKED else None,
    )
    return StoredEvent(
        subscription_id=sub.subscription_id,
        event_id=ref,
        kind=SNAPSHOT_KIND,
        occurred_at=at,
        recorded_at=recorded_at,
        payload=_dumps(encode_fold(f)),
    )


def rebased(row: Subscription, entries: Sequence[StoredEvent], at: datetime) -> list[StoredEvent]:
    """The kept entries of a subscription whose row was not written from them (before
    events were kept, by RedeemOffer, or by a server of an earlier version during a
    rollout, which patched the row and kept no event): the row is the truth, so it becomes
    a snapshot in place of the entries, but for those still PENDING (the row cannot
    reflect them; they apply when what they need arrives)."""
    f = fold(entries)
    subscription = subscription_of(row.subscription_id, f)
    waiting = [e for e in entries if effect_of(e, f, subscription).outcome is EventOutcome.PENDING]
    return [snapshot_of_row(row, at), *waiting]


def underlying_status(sub: Subscription) -> S:
    """The status a (legacy) REFUNDED row has apart from its refund, which its other
    fields tell apart (a refunded trial reads as active: rows before events were kept
    never refunded a trial)."""
    if sub.status is not S.REFUNDED:
        return sub.status
    if sub.grace_period_end is not None:
        return S.IN_GRACE_PERIOD
    return S.ACTIVE if sub.auto_renew else S.CANCELED


# -- the write --------------------------------------------------------------------------------


def events_of(account: AccountState, subscription_id: str) -> list[StoredEvent]:
    return [e for e in account.subscription_events if e.subscription_id == subscription_id]


def apply_event(
    account: AccountState,
    event: SubscriptionEvent,
    catalog: Catalog,
    recorded_at: datetime | None = None,
    *,
    compact_above: int = COMPACT_ABOVE,
    keep_recent: int = KEEP_RECENT,
) -> EventResult:
    """The account with `event` (validated with validate_event first) kept, and its
    subscription re-folded; `recorded_at` is when the service accepted it (default: its
    occurrence). A subscription with more than `compact_above` entries is compacted."""
    assert event.type is not None
    assert event.occurred_at is not None
    assert event.store is not None
    at = recorded_at or event.occurred_at
    sub_id = event.subscription_id
    entries = events_of(account, sub_id)
    row = next((s for s in account.subscriptions if s.subscription_id == sub_id), None)
    if row is not None and row.folded_events != len(entries):
        entries = rebased(row, entries, at)
    new = stored_event(event, at)
    twin = _same_content(entries, event)
    if twin is not None:
        # A redelivery under another id: it would add nothing to the fold, so it is not
        # kept twice (the store keeps its id: delivered again, it is a duplicate).
        effect = EventEffect(EventOutcome.STALE, f"the same event as {twin} (kept)")
        return EventResult(account, effect.outcome, row, effect)
    entries = sort_entries([*entries, new])
    if len(entries) > compact_above:
        entries = compact(entries, at, keep_recent)
    f = fold(entries)
    subscription = subscription_of(sub_id, f)
    if subscription is not None:
        subscription = dataclasses.replace(subscription, folded_events=len(entries))
    effect = effect_of(new, f, subscription)
    account = _record_facts(account, event, catalog)
    if event.market is not None and effect.outcome is EventOutcome.APPLIED:
        account = dataclasses.replace(account, home_market=event.market)
    others = [e for e in account.subscription_events if e.subscription_id != sub_id]
    kept = tuple(sorted([*others, *entries], key=lambda e: (e.subscription_id, entry_key(e))))
    account = dataclasses.replace(account, subscription_events=kept)
    account = _with_subscription(account, sub_id, subscription)
    return EventResult(account, effect.outcome, subscription, effect)


@dataclass(frozen=True, slots=True)
class KeptEvent:
    entry: StoredEvent
    effect: EventEffect


def kept_events(account: AccountState) -> list[KeptEvent]:
    """Every kept entry with its effect in its subscription's current fold, by
    subscription and in fold order."""
    by_sub: dict[str, list[StoredEvent]] = {}
    for entry in account.subscription_events:
        by_sub.setdefault(entry.subscription_id, []).append(entry)
    out: list[KeptEvent] = []
    for sub_id, entries in sorted(by_sub.items()):
        f = fold(entries)
        subscription = subscription_of(sub_id, f)
        out += [KeptEvent(e, effect_of(e, f, subscription)) for e in sort_entries(entries)]
    return out


def _same_content(entries: Sequence[StoredEvent], event: SubscriptionEvent) -> str | None:
    """The id of a kept event equal to `event` but for its id, if any."""
    mine, kind = _content(event), event.type.value if event.type else None
    for entry in entries:
        if entry.kind == kind and _content(_decode_payload(entry.payload)) == mine:
            return entry.event_id
    return None


def _content(event: SubscriptionEvent) -> tuple[object, ...]:
    """Everything of an event but its id."""
    return tuple(getattr(event, name) for name in _CONTENT_FIELDS)


_CONTENT_FIELDS = tuple(
    f.name for f in dataclasses.fields(SubscriptionEvent) if f.name != "event_id"
)


def effects(account: AccountState) -> dict[tuple[str, str], EventEffect]:
    """Every kept entry's effect in its subscription's fold, by (subscription id, event id)."""
    return {(k.entry.subscription_id, k.entry.event_id): k.effect for k in kept_events(account)}


def _least(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return min(a, b)


def _record_facts(
    account: AccountState, event: SubscriptionEvent, catalog: Catalog
) -> AccountState:
    """Facts an event establishes whatever it does to the subscription: an offer was
    redeemed (for the once-per-group rules), the user's market if none is known yet."""
    assert event.occurred_at is not None
    assert event.store is not None
    if event.offer_id is not None and all(
        r.offer_id != event.offer_id for r in account.redemptions
    ):
        offer = next(o for o in catalog.offers if o.id == event.offer_id)
        redemption = Redemption(offer.id, offer.group, event.occurred_at, event.store)
        account = dataclasses.replace(account, redemptions=(*account.redemptions, redemption))
    if event.market is not None and account.home_market is None:
        account = dataclasses.replace(account, home_market=event.market)
    return account


def _with_subscription(
    account: AccountState, subscription_id: str, sub: Subscription | None
) -> AccountState:
    """Replaces the subscription in place, appends a new one, or (None) leaves it out."""
    subs = account.subscriptions
    ids = [s.subscription_id for s in subs]
    if subscription_id in ids:
        index = ids.index(subscription_id)
        middle = () if sub is None else (sub,)
        subs = (*subs[:index], *middle, *subs[index + 1 :])
    elif sub is not None:
        subs = (*subs, sub)
    return dataclasses.replace(account, subscriptions=subs)
