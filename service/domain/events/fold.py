"""The fold: what a set of events says about a subscription (`Fold`), merged by maxima, minima
and sets so that order cannot matter, and the subscription it describes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.domain.account import (
    Store,
    Subscription,
)
from service.domain.account import SubscriptionStatus as S

# Events stamped further ahead than this of the service's clock are refused: one bogus
# future event would make every real event of the subscription look stale.
from service.domain.events.model import (
    _NEEDS_REFUNDED_PERIOD,
    PAID,
    REFUNDABLE,
    SNAPSHOT,
    EventType,
    Key,
    SubscriptionEvent,
    event_key,
)

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
