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

from service.domain.events.apply import (
    KeptEvent,
    apply_event,
    effects,
    events_of,
    kept_events,
    rebased,
    snapshot_of_row,
    underlying_status,
)
from service.domain.events.effects import effect_of
from service.domain.events.entries import (
    compact,
    decode_event,
    decode_fold,
    encode_event,
    encode_fold,
    entry_key,
    fold,
    snapshot_entry,
    snapshot_fold,
    sort_entries,
    stored_event,
)
from service.domain.events.fold import (
    Fold,
    RefundLine,
    fold_of_event,
    merge,
    merge_all,
    refunds_in_force,
    subscription_of,
)
from service.domain.events.model import (
    COMPACT_ABOVE,
    KEEP_RECENT,
    MAX_CLOCK_SKEW,
    PAID,
    REFUNDABLE,
    SNAPSHOT,
    SNAPSHOT_KIND,
    TYPE_ORDER,
    EventEffect,
    EventOutcome,
    EventResult,
    EventType,
    Key,
    SubscriptionEvent,
    event_key,
    validate_event,
)

__all__ = [
    "COMPACT_ABOVE",
    "KEEP_RECENT",
    "MAX_CLOCK_SKEW",
    "PAID",
    "REFUNDABLE",
    "SNAPSHOT",
    "SNAPSHOT_KIND",
    "TYPE_ORDER",
    "EventEffect",
    "EventOutcome",
    "EventResult",
    "EventType",
    "Fold",
    "KeptEvent",
    "Key",
    "RefundLine",
    "SubscriptionEvent",
    "apply_event",
    "compact",
    "decode_event",
    "decode_fold",
    "effect_of",
    "effects",
    "encode_event",
    "encode_fold",
    "entry_key",
    "event_key",
    "events_of",
    "fold",
    "fold_of_event",
    "kept_events",
    "merge",
    "merge_all",
    "rebased",
    "refunds_in_force",
    "snapshot_entry",
    "snapshot_fold",
    "snapshot_of_row",
    "sort_entries",
    "stored_event",
    "subscription_of",
    "underlying_status",
    "validate_event",
]
