"""What each kept event did in the fold (applied, pending, stale, superseded, and why), for
GetUserHistory and the write's answer."""

from __future__ import annotations

from service.domain.account import (
    StoredEvent,
    Subscription,
)
from service.domain.account import SubscriptionStatus as S
from service.domain.events.entries import decode_event, snapshot_fold
from service.domain.events.fold import Fold

# Events stamped further ahead than this of the service's clock are refused: one bogus
# future event would make every real event of the subscription look stale.
from service.domain.events.model import (
    SNAPSHOT,
    SNAPSHOT_KIND,
    EventEffect,
    EventOutcome,
    EventType,
    Key,
    SubscriptionEvent,
    event_key,
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
