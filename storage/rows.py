"""The rows of the per-user tables as the SQL backends (SQLite, Spanner) read and write
them: one definition of each table's column order and conversions, so the backends
cannot drift apart. A backend supplies only how it stores the values SQL has no common
type for (timestamps, booleans)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.domain.account import (
    Grant,
    GrantKind,
    HouseholdMembership,
    HouseholdRole,
    Redemption,
    Store,
    Subscription,
    SubscriptionStatus,
)
from storage.repository import HistoryEntry


def utc(value: datetime) -> datetime:
    """The instant in UTC; a naive datetime is refused rather than guessed at."""
    if value.utcoffset() is None:
        raise ValueError(f"cannot store a naive datetime ({value!r}): use timezone-aware UTC")
    return value.astimezone(UTC)


def text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string in the database, got {type(value).__name__}")
    return value


def opt_text(value: object) -> str | None:
    return None if value is None else text(value)


def integer(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer in the database, got {type(value).__name__}")
    return value


def load_response(stored: object) -> Mapping[str, Any]:
    response = json.loads(text(stored))
    if not isinstance(response, dict):
        raise TypeError(f"expected a JSON object as stored response, got {type(response).__name__}")
    return response


def dump_response(response: Mapping[str, Any]) -> str:
    """The response as canonical JSON text (keys sorted; NaN and infinities refused, as
    they are not JSON). Anything not JSON-serialisable raises TypeError or ValueError."""
    return json.dumps(dict(response), sort_keys=True, allow_nan=False, separators=(",", ":"))


@dataclass(frozen=True)
class RowCodec:
    """Row conversions for one backend. Rows hold the columns of
    SUBSCRIPTION/GRANT/REDEMPTION/MEMBERSHIP/HISTORY order below (without the user id and
    position columns, which the backend adds)."""

    encode_ts: Callable[[datetime], Any]
    decode_ts: Callable[[object], datetime]
    encode_bool: Callable[[bool], Any] = bool
    decode_bool: Callable[[object], bool] = bool

    def opt_ts(self, value: datetime | None) -> Any:
        return None if value is None else self.encode_ts(value)

    def opt_decode_ts(self, value: object) -> datetime | None:
        return None if value is None else self.decode_ts(value)

    # subscription_id, plan_id, status, store, started_at, current_period_end,
    # grace_period_end, auto_renew, last_event_at, offer_id
    def subscription_row(self, sub: Subscription) -> tuple[Any, ...]:
        return (
            sub.subscription_id,
            sub.plan_id,
            sub.status.value,
            sub.store.value,
            self.encode_ts(sub.started_at),
            self.encode_ts(sub.current_period_end),
            self.opt_ts(sub.grace_period_end),
            self.encode_bool(sub.auto_renew),
            self.opt_ts(sub.last_event_at),
            sub.offer_id,
        )

    def subscription(self, row: Sequence[Any]) -> Subscription:
        (
            subscription_id,
            plan_id,
            status,
            store,
            started_at,
            current_period_end,
            grace_period_end,
            auto_renew,
            last_event_at,
            offer_id,
        ) = row
        return Subscription(
            subscription_id=text(subscription_id),
            plan_id=text(plan_id),
            status=SubscriptionStatus(status),
            store=Store(store),
            started_at=self.decode_ts(started_at),
            current_period_end=self.decode_ts(current_period_end),
            grace_period_end=self.opt_decode_ts(grace_period_end),
            auto_renew=self.decode_bool(auto_renew),
            last_event_at=self.opt_decode_ts(last_event_at),
            offer_id=opt_text(offer_id),
        )

    # grant_id, kind, feature_id, plan_id, quota_value, starts_at, expires_at, revoked_at
    def grant_row(self, grant: Grant) -> tuple[Any, ...]:
        return (
            grant.grant_id,
            grant.kind.value,
            grant.feature_id,
            grant.plan_id,
            grant.quota_value,
            self.encode_ts(grant.starts_at),
            self.opt_ts(grant.expires_at),
            self.opt_ts(grant.revoked_at),
        )

    def grant(self, row: Sequence[Any]) -> Grant:
        grant_id, kind, feature_id, plan_id, quota_value, starts_at, expires_at, revoked_at = row
        return Grant(
            grant_id=text(grant_id),
            kind=GrantKind(kind),
            starts_at=self.decode_ts(starts_at),
            feature_id=opt_text(feature_id),
            plan_id=opt_text(plan_id),
            quota_value=None if quota_value is None else integer(quota_value),
            expires_at=self.opt_decode_ts(expires_at),
            revoked_at=self.opt_decode_ts(revoked_at),
        )

    # offer_id, offer_group, redeemed_at, store
    def redemption_row(self, redemption: Redemption) -> tuple[Any, ...]:
        return (
            redemption.offer_id,
            redemption.offer_group,
            self.encode_ts(redemption.redeemed_at),
            redemption.store.value,
        )

    def redemption(self, row: Sequence[Any]) -> Redemption:
        offer_id, offer_group, redeemed_at, store = row
        return Redemption(
            offer_id=text(offer_id),
            offer_group=text(offer_group),
            redeemed_at=self.decode_ts(redeemed_at),
            store=Store(store),
        )

    # household_id, role, manager_user_id, joined_at, left_at
    def membership_row(self, membership: HouseholdMembership) -> tuple[Any, ...]:
        return (
            membership.household_id,
            membership.role.value,
            membership.manager_user_id,
            self.encode_ts(membership.joined_at),
            self.opt_ts(membership.left_at),
        )

    def membership(self, row: Sequence[Any]) -> HouseholdMembership:
        household_id, role, manager_user_id, joined_at, left_at = row
        return HouseholdMembership(
            household_id=text(household_id),
            role=HouseholdRole(role),
            manager_user_id=text(manager_user_id),
            joined_at=self.decode_ts(joined_at),
            left_at=self.opt_decode_ts(left_at),
        )

    # kind, reference, effective_at, recorded_at, version, summary
    def history_entry(self, row: Sequence[Any]) -> HistoryEntry:
        kind, reference, effective_at, recorded_at, version, summary = row
        return HistoryEntry(
            kind=text(kind),
            reference=text(reference),
            effective_at=self.decode_ts(effective_at),
            recorded_at=self.decode_ts(recorded_at),
            version=integer(version),
            summary=text(summary),
        )
