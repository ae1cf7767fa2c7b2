"""Kept events as stored (`StoredEvent`): their encoding, their order, their fold, and
compaction into a snapshot entry."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from service.domain.account import (
    Store,
    StoredEvent,
)
from service.domain.events.fold import Fold, RefundLine, fold_of_event, merge_all

# Events stamped further ahead than this of the service's clock are refused: one bogus
# future event would make every real event of the subscription look stale.
from service.domain.events.model import (
    _KIND_RANK,
    KEEP_RECENT,
    SNAPSHOT_KIND,
    EventType,
    Key,
    SubscriptionEvent,
)


def fold(entries: Iterable[StoredEvent]) -> Fold:
    """The fold of a subscription's kept events (events and snapshots), in fold order
    (the merge is commutative and associative: one n-ary merge gives the same fold)."""
    return merge_all([_entry_fold(entry.kind, entry.payload) for entry in sort_entries(entries)])


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
