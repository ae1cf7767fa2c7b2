"""Subscription lifecycle events, and a subscription as the fold of its events.

Store events arrive late, twice and out of order. Every accepted event is kept
(`AccountState.subscription_events`), and a subscription is a pure function of the set of
its events (`fold`): they are sorted by `event_key` = (occurred_at, the type's rank in
`TYPE_ORDER`, event id), a total order, and merged into a `Fold`. Every merge step is
commutative and associative (maxima, minima and sets by that key), so the order of
delivery cannot matter, and a prefix of the events can be compacted into one snapshot
entry (`compact`): fold(snapshot + rest) == fold(all) for any split.

The rules of the fold (each with the stores' behaviour it follows; docs/SUBSCRIPTION_FOLD.md
has the same list):

1. Status, auto-renew and grace end come from the last status event (the types of
   `SNAPSHOT`) in the order: stores send the subscription's state with each notification,
   so the newest one describes it. At the same instant the type that ends more wins
   (`TYPE_ORDER`). Older status events are STALE.
2. The plan is the one named by the last status event naming one (an upgrade's
   PLAN_CHANGED, or a renewal carrying a downgrade); the period end is the latest any
   event carried; `started_at` the earliest occurrence; the offer the least offer id.
3. REVOKED (Family Sharing revoked, Play revocation) ends access from its occurrence,
   whatever else arrives: stores never undo a revocation. Events after it are SUPERSEDED.
4. A REFUNDED names the period it refunds by its end. It takes access away from an
   entitled status (trialing, active, canceled, in grace: the subscription shows
   REFUNDED) until a later *paid* period (PURCHASED, RENEWED, RESUMED, PLAN_CHANGED with a
   later period end) starts or it is reversed: the store charged nothing for what the
   refund took back, and only a new payment buys a new period.
5. PERIOD_EXTENDED (App Store renewal extension, Play deferral) moves the period end
   later only: it is no payment, so it does not end a refund (the extended time is not
   granted while the period stays refunded) and the status stays what it was.
6. A refund of a trial period counts like any other: stores refund intro-price and
   same-day-converted trial transactions, and the App Store's REFUND revokes that
   transaction's access.
7. REFUND_REVERSED lifts the refund of its period: of the refunds and reversals naming a
   period, the last in the order is in force (a period refunded, reversed and refunded
   again is refunded).
8. An event that needs something not seen yet is kept and answered PENDING: a refund of
   a period no event has carried yet (its renewal or extension), a reversal with no
   refund of its period before it, any event of a subscription whose plan, period end
   or status no event has given yet. It takes effect when what it needs arrives; it is
   never refused, so a store does not redeliver it.
9. A renewal (or any status event) of a subscription never seen, carrying plan and period
   end, starts it: the store says the user paid for that period, and the purchase
   notification may never come (a subscription older than the integration). The purchase,
   arriving later, moves `started_at` back.
10. A refund of a period a later paid period followed (a past period) takes nothing
   away: SUPERSEDED. So is a reversal of such a refund.

Duplicates (the same event id) are caught before this module, by the store's idempotency
keys. A subscription row without events (written before events were kept, or by
RedeemOffer) folds as a snapshot of itself (`snapshot_of_row`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from service.domain.account import (
    AccountState,
    Redemption,
    Store,
    StoredEvent,
    Subscription,
)
from service.domain.account import SubscriptionStatus as S
from service.domain.catalog import Catalog
from service.domain.errors import FieldViolation, InvalidRequest
from service.domain.validation import check_id, check_market

# Events stamped further ahead than this of the service's clock are refused: one bogus
# future event would make every real event of the subscription look stale.
MAX_CLOCK_SKEW = timedelta(hours=1)

# A subscription with more kept events than this is compacted on its next write: all but
# its newest KEEP_RECENT events become one snapshot (docs/SUBSCRIPTION_FOLD.md).
COMPACT_ABOVE = 64
KEEP_RECENT = 16

SNAPSHOT_KIND = "snapshot"


class EventType(enum.Enum):
    PURCHASED = "purchased"
    TRIAL_STARTED = "trial_started"
    RENEWED = "renewed"
    RENEWAL_FAILED = "renewal_failed"
    GRACE_EXPIRED = "grace_expired"
    ON_HOLD = "on_hold"
    PAUSED = "paused"
    RESUMED = "resumed"
    CANCELED = "canceled"
    UNCANCELED = "uncanceled"
    EXPIRED = "expired"
    REVOKED = "revoked"
    PLAN_CHANGED = "plan_changed"
    # A per-transaction refund: `refunded_period_end` names the period it refunds.
    REFUNDED = "refunded"
    # The store reversed the refund of the period `refunded_period_end`.
    REFUND_REVERSED = "refund_reversed"
    # The period end moved later without a payment (Play deferral, App Store extension).
    PERIOD_EXTENDED = "period_extended"


class EventOutcome(enum.Enum):
    """An event's effect in the fold of its subscription's events."""

    # It decides part of the subscription (status, plan, period end, a refund in force...).
    APPLIED = "applied"
    # Kept; a newer event of the same kind decides instead (an older status event, an
    # extension to an earlier end, a refund of the period refunded again later).
    STALE = "stale"
    # Kept; it can never take effect (after a revocation, a refund of a past period, a
    # refund reversed, a reversal of a refund of a past period).
    SUPERSEDED = "superseded"
    # Kept; it needs an event not seen yet (docs: rule 8) and takes effect when it arrives.
    PENDING = "pending"
    # The event id was recorded before: the first answer, replayed (never the result of
    # apply_event: the write use case answers it for a replay).
    DUPLICATE = "duplicate"


# The status and auto-renew setting each status event leads to, whatever came before.
SNAPSHOT: dict[EventType, tuple[S, bool]] = {
    EventType.TRIAL_STARTED: (S.TRIALING, True),
    EventType.PURCHASED: (S.ACTIVE, True),
    EventType.RENEWED: (S.ACTIVE, True),
    EventType.RENEWAL_FAILED: (S.IN_GRACE_PERIOD, True),
    EventType.GRACE_EXPIRED: (S.ON_HOLD, True),
    EventType.ON_HOLD: (S.ON_HOLD, True),
    EventType.PAUSED: (S.PAUSED, True),
    EventType.RESUMED: (S.ACTIVE, True),
    EventType.CANCELED: (S.CANCELED, False),
    EventType.UNCANCELED: (S.ACTIVE, True),
    EventType.EXPIRED: (S.EXPIRED, False),
    EventType.PLAN_CHANGED: (S.ACTIVE, True),
}

# The fold order of types at the same instant, first to last: a later type wins a tie.
# Status events rank by the status they lead to, the one that ends more last (trialing,
# active, canceled, grace, paused, on hold, expired); a reversal follows its refund.
TYPE_ORDER: tuple[EventType, ...] = (
    EventType.TRIAL_STARTED,
    EventType.PURCHASED,
    EventType.RENEWED,
    EventType.RESUMED,
    EventType.UNCANCELED,
    EventType.PLAN_CHANGED,
    EventType.PERIOD_EXTENDED,
    EventType.CANCELED,
    EventType.RENEWAL_FAILED,
    EventType.PAUSED,
    EventType.GRACE_EXPIRED,
    EventType.ON_HOLD,
    EventType.EXPIRED,
    EventType.REFUNDED,
    EventType.REFUND_REVERSED,
    EventType.REVOKED,
)
_TYPE_RANK = {t: i for i, t in enumerate(TYPE_ORDER)}
_KIND_RANK = {t.value: i for i, t in enumerate(TYPE_ORDER)}

# Events that pay for the period they carry (rule 4).
PAID = frozenset(
    {EventType.PURCHASED, EventType.RENEWED, EventType.RESUMED, EventType.PLAN_CHANGED}
)

# The statuses whose access a refund in force takes away (rules 4, 6).
REFUNDABLE = frozenset({S.TRIALING, S.ACTIVE, S.CANCELED, S.IN_GRACE_PERIOD})

_NEEDS_PLAN = frozenset({EventType.PURCHASED, EventType.TRIAL_STARTED, EventType.PLAN_CHANGED})
_NEEDS_PERIOD_END = frozenset(
    {
        EventType.PURCHASED,
        EventType.TRIAL_STARTED,
        EventType.RENEWED,
        EventType.RESUMED,
        EventType.PERIOD_EXTENDED,
    }
)
_NEEDS_REFUNDED_PERIOD = frozenset({EventType.REFUNDED, EventType.REFUND_REVERSED})


@dataclass(frozen=True, slots=True)
class SubscriptionEvent:
    event_id: str
    subscription_id: str
    store: Store | None
    type: EventType | None
    occurred_at: datetime | None
    plan_id: str | None = None
    current_period_end: datetime | None = None
    grace_period_end: datetime | None = None
    offer_id: str | None = None
    market: str | None = None
    # REFUNDED and REFUND_REVERSED: the end of the period the refunded transaction paid for.
    refunded_period_end: datetime | None = None


# (occurred_at, type rank, event id): the fold's total order. A snapshot's key is the
# largest key it compacted.
Key = tuple[datetime, int, str]


@dataclass(frozen=True, slots=True)
class EventEffect:
    outcome: EventOutcome
    why: str  # one line for people (GetUserHistory), without personal data


@dataclass(frozen=True, slots=True)
class EventResult:
    account: AccountState
    outcome: EventOutcome
    # None while the subscription is not known yet (every event of it PENDING).
    subscription: Subscription | None
    effect: EventEffect


# -- validation ------------------------------------------------------------------------------


def validate_event(event: SubscriptionEvent, catalog: Catalog, now: datetime) -> None:
    """Raises InvalidRequest naming every bad field of the event."""
    out: list[FieldViolation] = []
    check_id(event.event_id, "event_id", out)
    check_id(event.subscription_id, "subscription_id", out)
    if event.store is None:
        out.append(FieldViolation("store", "must be a known store"))
    if event.type is None:
        out.append(FieldViolation("event_type", "must be a known event type"))
    occurred = event.occurred_at
    if occurred is None:
        out.append(FieldViolation("occurred_at", "must be set"))
    elif occurred > now + MAX_CLOCK_SKEW:
        out.append(FieldViolation("occurred_at", "lies in the future"))
    out += _catalog_violations(event, catalog)
    if event.type is not None:
        out += _type_violations(event, event.type, occurred)
    if out:
        raise InvalidRequest(out)


def _catalog_violations(event: SubscriptionEvent, catalog: Catalog) -> list[FieldViolation]:
    """The plan, offer and market the event names exist."""
    out: list[FieldViolation] = []
    if event.plan_id is not None:
        plan = catalog.plans.get(event.plan_id)
        if plan is None or not plan.premium:
            out.append(FieldViolation("plan_id", f"unknown premium plan '{event.plan_id}'"))
    if event.offer_id is not None and all(o.id != event.offer_id for o in catalog.offers):
        out.append(FieldViolation("offer_id", f"unknown offer '{event.offer_id}'"))
    if event.market is not None:
        check_market(event.market, "market", out)
    return out


def _type_violations(
    event: SubscriptionEvent, kind: EventType, occurred: datetime | None
) -> list[FieldViolation]:
    """The fields the event's type needs: its plan, its period end or grace end (after the
    event), the end of the refunded period."""
    out: list[FieldViolation] = []
    label = kind.name
    if kind in _NEEDS_PLAN and event.plan_id is None:
        out.append(FieldViolation("plan_id", f"required for {label}"))
    if kind in _NEEDS_PERIOD_END:
        out += _end_violations("current_period_end", event.current_period_end, occurred, label)
    if kind is EventType.RENEWAL_FAILED:
        out += _end_violations("grace_period_end", event.grace_period_end, occurred, label)
    if kind in _NEEDS_REFUNDED_PERIOD and event.refunded_period_end is None:
        out.append(FieldViolation("refunded_period_end", f"required for {label}"))
    return out


def _end_violations(
    name: str, end: datetime | None, occurred: datetime | None, label: str
) -> list[FieldViolation]:
    """An end the event's type needs: set, and after the event."""
    if end is None:
        return [FieldViolation(name, f"required for {label}")]
    if occurred is not None and end <= occurred:
        return [FieldViolation(name, "must be after occurred_at")]
    return []


def event_key(event: SubscriptionEvent) -> Key:
    assert event.occurred_at is not None
    assert event.type is not None
    return (event.occurred_at, _TYPE_RANK[event.type], event.event_id)


# -- the fold --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefundLine:
    """The refunds and reversals naming one period: the last of them (it is in force),
    and the first refund (a reversal needs a refund before it)."""

    last: Key
    last_is_refund: bool
    first_refund: Key | None


@dataclass(frozen=True, slots=True)
class Fold:
    """The merge of a set of events of one subscription. Every field is a maximum, a
    minimum or a set by the fold order, so `merge` is commutative and associative."""

    events: int = 0
    # The earliest event: started_at and the store.
    first: tuple[Key, Store] | None = None
    offer_id: str | None = None
    # The last status event: (key, type, grace end).
    status: tuple[Key, EventType, datetime | None] | None = None
    # The plan: ((is a status or revocation event, key), plan id), the greatest.
    plan: tuple[tuple[bool, Key], str] | None = None
    # The latest period end carried, and by which event.
    period: tuple[datetime, Key] | None = None
    # The latest period end paid for (rule 4).
    paid: tuple[datetime, Key] | None = None
    # Period ends carried, not older than the latest paid one (older ones can no longer
    # matter: rule 10), and by the first event carrying each.
    known_ends: tuple[tuple[datetime, Key], ...] = ()
    # Refund lines by refunded period end, not older than the latest paid one.
    refunds: tuple[tuple[datetime, RefundLine], ...] = ()
    # The earliest revocation.
    revoked: Key | None = None


def _max(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _min(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _merge_lines(a: RefundLine, b: RefundLine) -> RefundLine:
    last, is_refund = max((a.last, a.last_is_refund), (b.last, b.last_is_refund))
    return RefundLine(last, is_refund, _min(a.first_refund, b.first_refund))


def merge(a: Fold, b: Fold) -> Fold:
    """The fold of the union of two disjoint event sets."""
    return merge_all((a, b))


def merge_all(folds: Sequence[Fold]) -> Fold:
    """The fold of the union of disjoint event sets, in one pass (merge, n-ary)."""
    if not folds:
        return Fold()
    paid = None
    for f in folds:
        paid = _max(paid, f.paid)
    floor = paid[0] if paid is not None else None
    ends: dict[datetime, Key] = {}
    lines: dict[datetime, RefundLine] = {}
    events = 0
    first = offer_id = status = plan = period = revoked = None
    for f in folds:
        events += f.events
        first, offer_id = _min(first, f.first), _min(offer_id, f.offer_id)
        status, plan, period = _max(status, f.status), _max(plan, f.plan), _max(period, f.period)
        revoked = _min(revoked, f.revoked)
        for end, key in f.known_ends:
            if floor is None or end >= floor:
                ends[end] = _min(ends.get(end), key)
        for end, line in f.refunds:
            if floor is None or end >= floor:
                seen = lines.get(end)
                lines[end] = line if seen is None else _merge_lines(seen, line)
    return Fold(
        events=events,
        first=first,
        offer_id=offer_id,
        status=status,
        plan=plan,
        period=period,
        paid=paid,
        known_ends=tuple(sorted(ends.items())),
        refunds=tuple(sorted(lines.items())),
        revoked=revoked,
    )


def fold_of_event(event: SubscriptionEvent) -> Fold:
    """The fold of one event."""
    assert event.type is not None
    assert event.store is not None
    key, kind, end = event_key(event), event.type, event.current_period_end
    status = None
    if kind in SNAPSHOT:
        grace = event.grace_period_end if kind is EventType.RENEWAL_FAILED else None
        status = (key, kind, grace)
    plan = None
    if event.plan_id is not None:
        plan = ((kind in SNAPSHOT or kind is EventType.REVOKED, key), event.plan_id)
    refunds: tuple[tuple[datetime, RefundLine], ...] = ()
    if kind in _NEEDS_REFUNDED_PERIOD:
        assert event.refunded_period_end is not None
        is_refund = kind is EventType.REFUNDED
        line = RefundLine(key, is_refund, key if is_refund else None)
        refunds = ((event.refunded_period_end, line),)
    return merge(
        Fold(),
        Fold(
            events=1,
            first=(key, event.store),
            offer_id=event.offer_id,
            status=status,
            plan=plan,
            period=None if end is None else (end, key),
            paid=(end, key) if end is not None and kind in PAID else None,
            known_ends=() if end is None else ((end, key),),
            refunds=refunds,
            revoked=key if kind is EventType.REVOKED else None,
        ),
    )


def fold(entries: Iterable[StoredEvent]) -> Fold:
    """The fold of a subscription's kept events (events and snapshots), in fold order
    (the merge is commutative and associative: one n-ary merge gives the same fold)."""
    return merge_all([_entry_fold(entry.kind, entry.payload) for entry in sort_entries(entries)])


def refunds_in_force(f: Fold) -> list[tuple[datetime, RefundLine]]:
    """The refunds that take access away (rules 4-8, 10): the last of its line, of a
    period some event carried, no later paid period, no revocation."""
    if f.revoked is not None:
        return []
    known = {end for end, _ in f.known_ends}
    paid = f.paid[0] if f.paid is not None else None
    return [
        (end, line)
        for end, line in f.refunds
        if line.last_is_refund and end in known and (paid is None or paid <= end)
    ]


def subscription_of(subscription_id: str, f: Fold) -> Subscription | None:
    """The subscription a fold describes; None until an event has given its plan, its
    period end and its status (rule 8)."""
    if f.plan is None or f.period is None or f.first is None:
        return None
    if f.status is None and f.revoked is None:
        return None
    (first_key, store) = f.first
    status, auto_renew, grace, last = S.REVOKED, False, None, f.revoked
    if f.revoked is None:
        assert f.status is not None
        last, kind, grace = f.status
        status, auto_renew = SNAPSHOT[kind]
        if status in REFUNDABLE and refunds_in_force(f):
            status = S.REFUNDED
    assert last is not None
    return Subscription(
        subscription_id=subscription_id,
        plan_id=f.plan[1],
        status=status,
        store=store,
        started_at=first_key[0],
        current_period_end=f.period[0],
        grace_period_end=grace,
        auto_renew=auto_renew,
        last_event_at=last[0],
        offer_id=f.offer_id,
    )


# -- effects ---------------------------------------------------------------------------------


def _at(key: Key) -> str:
    return key[0].isoformat()


def effect_of(entry: StoredEvent, f: Fold, subscription: Subscription | None) -> EventEffect:
    """What `entry` does in `f`, the fold of all the subscription's kept events."""
    if entry.kind == SNAPSHOT_KIND:
        snap = snapshot_fold(entry)
        return EventEffect(EventOutcome.APPLIED, f"snapshot of {snap.events} compacted events")
    event = decode_event(entry)
    assert event.type is not None
    kind, key = event.type, event_key(event)
    if subscription is None:
        return _pending_effect(f)
    revoked = _revocation_effect(kind, key, f)
    if revoked is not None:
        return revoked
    if kind in SNAPSHOT:
        return _status_effect(key, f, subscription)
    if kind is EventType.PERIOD_EXTENDED:
        return _extension_effect(key, f, subscription)
    return _refund_effect(event, kind, key, f)


def _pending_effect(f: Fold) -> EventEffect:
    """An event of a subscription no event made known yet: what is still missing."""
    missing = [
        name for name, value in (("a plan", f.plan), ("a period end", f.period)) if value is None
    ]
    if f.status is None and f.revoked is None:
        missing.append("a status (purchase, renewal...)")
    return EventEffect(
        EventOutcome.PENDING,
        "the subscription is not known yet: no event gave " + ", ".join(missing),
    )


def _revocation_effect(kind: EventType, key: Key, f: Fold) -> EventEffect | None:
    """The revocation itself, or an event after it; None: the revocation does not decide."""
    if f.revoked is None:
        return None
    if kind is EventType.REVOKED:
        if key == f.revoked:
            return EventEffect(EventOutcome.APPLIED, "revoked: no access from then on")
        return EventEffect(EventOutcome.SUPERSEDED, f"revoked earlier, at {_at(f.revoked)}")
    if key > f.revoked:
        return EventEffect(EventOutcome.SUPERSEDED, f"after the revocation at {_at(f.revoked)}")
    return None


def _status_effect(key: Key, f: Fold, subscription: Subscription) -> EventEffect:
    """An event that sets the status: the latest one does."""
    assert f.status is not None
    if key == f.status[0]:
        if f.revoked is not None:
            return EventEffect(EventOutcome.APPLIED, "the plan and settings before revocation")
        return EventEffect(EventOutcome.APPLIED, f"sets the status: {subscription.status.value}")
    period_note = ""
    if f.period is not None and f.period[1] == key:
        period_note = "; its period end is the latest"
    later = f.status[0]
    return EventEffect(
        EventOutcome.STALE,
        f"older than the {f.status[1].value} at {_at(later)}, which sets the status" + period_note,
    )


def _extension_effect(key: Key, f: Fold, subscription: Subscription) -> EventEffect:
    """A period extension: the one giving the latest period end moves it."""
    assert f.period is not None
    if f.period[1] == key:
        refunded = (
            " (no access while its period is refunded)" if subscription.status is S.REFUNDED else ""
        )
        return EventEffect(EventOutcome.APPLIED, "moves the period end" + refunded)
    return EventEffect(
        EventOutcome.STALE, f"the period already ends later ({f.period[0].isoformat()})"
    )


def _refund_effect(event: SubscriptionEvent, kind: EventType, key: Key, f: Fold) -> EventEffect:
    """A refund of a period, or its reversal."""
    assert event.refunded_period_end is not None
    end = event.refunded_period_end
    paid = f.paid[0] if f.paid is not None else None
    line = dict(f.refunds).get(end)
    if paid is not None and paid > end:
        return EventEffect(
            EventOutcome.SUPERSEDED,
            f"a later period was paid for (until {paid.isoformat()}): "
            "a past period's refund takes nothing away",
        )
    if f.revoked is not None:
        return EventEffect(EventOutcome.SUPERSEDED, f"revoked at {_at(f.revoked)}")
    assert line is not None
    if kind is EventType.REFUNDED:
        if line.last != key:
            if line.last_is_refund:
                return EventEffect(EventOutcome.STALE, "the period was refunded again later")
            return EventEffect(EventOutcome.SUPERSEDED, f"reversed at {_at(line.last)}")
        if end not in {e for e, _ in f.known_ends}:
            return EventEffect(
                EventOutcome.PENDING,
                f"no event carried the refunded period (ending {end.isoformat()}) yet",
            )
        return EventEffect(
            EventOutcome.APPLIED,
            "the period is refunded: no access until a later paid period or a reversal",
        )
    # REFUND_REVERSED
    if line.first_refund is None or line.first_refund > key:
        return EventEffect(EventOutcome.PENDING, "no refund of its period recorded before it yet")
    if line.last != key:
        return EventEffect(EventOutcome.STALE, "the period was refunded again later")
    return EventEffect(EventOutcome.APPLIED, "lifts the refund of its period")


# -- kept events: payloads, snapshots, compaction ------------------------------------------------


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_ts(value: object) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def _dumps(payload: Mapping[str, Any]) -> str:
    return json.dumps(dict(payload), sort_keys=True, separators=(",", ":"))


def encode_event(event: SubscriptionEvent) -> dict[str, Any]:
    """The event as sent, as a JSON object."""
    assert event.store is not None
    assert event.type is not None
    return {
        "event_id": event.event_id,
        "subscription_id": event.subscription_id,
        "store": event.store.value,
        "type": event.type.value,
        "occurred_at": _ts(event.occurred_at),
        "plan_id": event.plan_id,
        "current_period_end": _ts(event.current_period_end),
        "grace_period_end": _ts(event.grace_period_end),
        "offer_id": event.offer_id,
        "market": event.market,
        "refunded_period_end": _ts(event.refunded_period_end),
    }


def stored_event(event: SubscriptionEvent, recorded_at: datetime) -> StoredEvent:
    assert event.type is not None
    assert event.occurred_at is not None
    return StoredEvent(
        subscription_id=event.subscription_id,
        event_id=event.event_id,
        kind=event.type.value,
        occurred_at=event.occurred_at,
        recorded_at=recorded_at,
        payload=_dumps(encode_event(event)),
    )


def decode_event(entry: StoredEvent) -> SubscriptionEvent:
    return _decode_payload(entry.payload)


@functools.lru_cache(maxsize=16384)
def _decode_payload(payload: str) -> SubscriptionEvent:
    data = json.loads(payload)
    return SubscriptionEvent(
        event_id=str(data["event_id"]),
        subscription_id=str(data["subscription_id"]),
        store=Store(data["store"]),
        type=EventType(data["type"]),
        occurred_at=_parse_ts(data["occurred_at"]),
        plan_id=data.get("plan_id"),
        current_period_end=_parse_ts(data.get("current_period_end")),
        grace_period_end=_parse_ts(data.get("grace_period_end")),
        offer_id=data.get("offer_id"),
        market=data.get("market"),
        refunded_period_end=_parse_ts(data.get("refunded_period_end")),
    )


def _key_json(key: Key) -> list[Any]:
    return [key[0].isoformat(), key[1], key[2]]


def _key_of(value: Sequence[Any]) -> Key:
    return (datetime.fromisoformat(str(value[0])), int(value[1]), str(value[2]))


def _opt_key(value: Sequence[Any] | None) -> Key | None:
    return None if value is None else _key_of(value)


def encode_fold(f: Fold) -> dict[str, Any]:
    return {
        "events": f.events,
        "first": None if f.first is None else [_key_json(f.first[0]), f.first[1].value],
        "offer_id": f.offer_id,
        "status": None
        if f.status is None
        else [_key_json(f.status[0]), f.status[1].value, _ts(f.status[2])],
        "plan": None if f.plan is None else [f.plan[0][0], _key_json(f.plan[0][1]), f.plan[1]],
        "period": None if f.period is None else [_ts(f.period[0]), _key_json(f.period[1])],
        "paid": None if f.paid is None else [_ts(f.paid[0]), _key_json(f.paid[1])],
        "known_ends": [[_ts(end), _key_json(key)] for end, key in f.known_ends],
        "refunds": [
            [
                _ts(end),
                _key_json(line.last),
                line.last_is_refund,
                None if line.first_refund is None else _key_json(line.first_refund),
            ]
            for end, line in f.refunds
        ],
        "revoked": None if f.revoked is None else _key_json(f.revoked),
    }


def decode_fold(data: Mapping[str, Any]) -> Fold:
    def end_key(value: Sequence[Any] | None) -> tuple[datetime, Key] | None:
        if value is None:
            return None
        end = _parse_ts(value[0])
        assert end is not None
        return (end, _key_of(value[1]))

    first, status, plan = data["first"], data["status"], data["plan"]
    known = [end_key(v) for v in data["known_ends"]]
    return Fold(
        events=int(data["events"]),
        first=None if first is None else (_key_of(first[0]), Store(first[1])),
        offer_id=data["offer_id"],
        status=None
        if status is None
        else (_key_of(status[0]), EventType(status[1]), _parse_ts(status[2])),
        plan=None if plan is None else ((bool(plan[0]), _key_of(plan[1])), str(plan[2])),
        period=end_key(data["period"]),
        paid=end_key(data["paid"]),
        known_ends=tuple(k for k in known if k is not None),
        refunds=tuple(
            (
                datetime.fromisoformat(str(end)),
                RefundLine(_key_of(last), bool(is_refund), _opt_key(first_refund)),
            )
            for end, last, is_refund, first_refund in data["refunds"]
        ),
        revoked=_opt_key(data["revoked"]),
    )


def snapshot_fold(entry: StoredEvent) -> Fold:
    return decode_fold(json.loads(entry.payload))


def _last_key(f: Fold) -> Key:
    keys = [k for k in (f.first and f.first[0], f.status and f.status[0], f.revoked) if k]
    keys += [k for k in (f.period and f.period[1], f.paid and f.paid[1]) if k]
    keys += [line.last for _, line in f.refunds]
    return max(keys)


def snapshot_entry(subscription_id: str, f: Fold, recorded_at: datetime) -> StoredEvent:
    """A kept entry standing for the events folded into `f`; ordered at the last of them."""
    last = _last_key(f)
    return StoredEvent(
        subscription_id=subscription_id,
        event_id=f"snapshot:{last[2]}",
        kind=SNAPSHOT_KIND,
        occurred_at=last[0],
        recorded_at=recorded_at,
        payload=_dumps(encode_fold(f)),
    )


@functools.lru_cache(maxsize=16384)
def _entry_fold(kind: str, payload: str) -> Fold:
    """The fold of one kept entry. Cached by its content (a pure function of immutable
    text): a write re-folds the same kept events as the one before it."""
    if kind == SNAPSHOT_KIND:
        return decode_fold(json.loads(payload))
    return fold_of_event(_decode_payload(payload))


def entry_key(entry: StoredEvent) -> Key:
    if entry.kind == SNAPSHOT_KIND:
        # Before any event of the same instant: its place does not change the fold.
        return (entry.occurred_at, -1, entry.event_id)
    return (entry.occurred_at, _KIND_RANK[entry.kind], entry.event_id)


def sort_entries(entries: Iterable[StoredEvent]) -> list[StoredEvent]:
    return sorted(entries, key=entry_key)


def compact(
    entries: Sequence[StoredEvent], recorded_at: datetime, keep: int = KEEP_RECENT
) -> list[StoredEvent]:
    """All but the newest `keep` entries (in fold order) merged into one snapshot entry;
    the fold of the result equals the fold of `entries`."""
    ordered = sort_entries(entries)
    if len(ordered) <= keep + 1:
        return ordered
    old, recent = ordered[: len(ordered) - keep], ordered[len(ordered) - keep :]
    merged = fold(old)
    return [snapshot_entry(ordered[0].subscription_id, merged, recorded_at), *recent]


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
