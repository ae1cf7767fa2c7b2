"""The per-user tables as the SQL backends (SQLite, Spanner) read and write them.

Each table is described once here: its name, the columns of its rows in row order with
their types, and (for the tables holding the tuples of AccountState) which tuple it holds
and how an item becomes a row and back. The backends loop over these descriptions, so
they cannot drift apart. A backend supplies only its naming convention (SQLite uses these
snake_case names, Spanner their CamelCase: `subscription_id` is `SubscriptionId`) and how
it stores the values SQL has no common type for (timestamps, booleans: a RowCodec).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from service.domain.account import (
    AccountState,
    Grant,
    GrantKind,
    HouseholdMembership,
    HouseholdRole,
    Redemption,
    Store,
    StoredEvent,
    Subscription,
    SubscriptionStatus,
)
from storage.repository import HistoryEntry, IdempotencyKey

T = TypeVar("T")

# -- values ----------------------------------------------------------------------------------


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


# -- tables ----------------------------------------------------------------------------------


class ColumnType(enum.Enum):
    TEXT = "text"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"


# (name, type): a column as the rows below hold it.
Column = tuple[str, ColumnType]
Columns = tuple[Column, ...]

# Every per-user table's rows start with the user's id; a child table's rows then with the
# item's position in its tuple of AccountState (which keeps the tuple's order).
USER_ID = "user_id"
POSITION = "position"


def names(columns: Columns) -> tuple[str, ...]:
    return tuple(name for name, _ in columns)


@dataclass(frozen=True, slots=True)
class Table:
    """A per-user table: its name and the columns RowCodec reads and writes, in row
    order (the user id, and any key column a backend adds, not among them)."""

    name: str
    columns: Columns

    @property
    def column_names(self) -> tuple[str, ...]:
        return names(self.columns)

    def pick(self, *wanted: str) -> Columns:
        """Some of the columns, in the order asked for."""
        by_name = dict(self.columns)
        return tuple((name, by_name[name]) for name in wanted)


@dataclass(frozen=True, slots=True)
class ChildTable(Generic[T]):
    """A table holding one tuple of AccountState (`field`), one row per item keyed by
    (user id, position); a write of the state replaces all of the user's rows."""

    name: str
    field: str  # the attribute of AccountState it holds
    columns: Columns  # the item's columns, after user id and position
    encode: Callable[[RowCodec, T], tuple[Any, ...]]
    decode: Callable[[RowCodec, Sequence[Any]], T]

    @property
    def column_names(self) -> tuple[str, ...]:
        return names(self.columns)

    @property
    def write_columns(self) -> tuple[str, ...]:
        """The columns of a row as `rows` makes it."""
        return (USER_ID, POSITION, *self.column_names)

    def items(self, account: AccountState) -> tuple[T, ...]:
        items: tuple[T, ...] = getattr(account, self.field)
        return items

    def rows(self, codec: RowCodec, account: AccountState) -> list[tuple[Any, ...]]:
        """The rows that store the tuple of `account`, in `write_columns` order."""
        return [
            (account.user_id, position, *self.encode(codec, item))
            for position, item in enumerate(self.items(account))
        ]

    def read(self, codec: RowCodec, rows: Sequence[Sequence[Any]]) -> tuple[T, ...]:
        """The tuple from its rows (columns only, in position order)."""
        return tuple(self.decode(codec, row) for row in rows)


_TEXT, _INT = ColumnType.TEXT, ColumnType.INTEGER
_BOOL, _TS = ColumnType.BOOLEAN, ColumnType.TIMESTAMP

# One row per user: the scalars of AccountState (and the version).
USERS = Table(
    "users",
    (("version", _INT), ("home_market", _TEXT), ("student_verified_until", _TS)),
)
# One row per write request (AccountRepository.apply), keyed by (user id, kind, request id).
PROCESSED_REQUESTS = Table(
    "processed_requests",
    (
        ("kind", _TEXT), ("request_id", _TEXT), ("fingerprint", _TEXT), ("response", _TEXT),
        ("version", _INT), ("recorded_at", _TS),
    ),
)  # fmt: skip
# What a replay of a request reads back.
REPLAY_COLUMNS = PROCESSED_REQUESTS.pick("fingerprint", "response", "version")
# The append-only history; each backend adds its own ordering key.
HISTORY = Table(
    "history",
    (
        ("kind", _TEXT), ("reference", _TEXT), ("effective_at", _TS), ("recorded_at", _TS),
        ("version", _INT), ("summary", _TEXT),
    ),
)  # fmt: skip


# -- rows ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowCodec:
    """Row conversions for one backend: rows hold the columns of the tables above, in
    their order (without the user id and position columns, which the tables add)."""

    encode_ts: Callable[[datetime], Any]
    decode_ts: Callable[[object], datetime]
    encode_bool: Callable[[bool], Any] = bool
    decode_bool: Callable[[object], bool] = bool

    def opt_ts(self, value: datetime | None) -> Any:
        return None if value is None else self.encode_ts(value)

    def opt_decode_ts(self, value: object) -> datetime | None:
        return None if value is None else self.decode_ts(value)

    def user_row(self, account: AccountState) -> tuple[Any, ...]:
        """USERS columns."""
        return (account.version, account.home_market, self.opt_ts(account.student_verified_until))

    def account(
        self,
        user_id: str,
        user: Sequence[Any] | None,
        children: Sequence[Sequence[Sequence[Any]]],
    ) -> AccountState:
        """The state from its USERS row (None: a user the store has never seen) and the
        rows of each of CHILD_TABLES, in that order."""
        if user is None:
            return AccountState.new(user_id)
        version, home_market, student_verified_until = user
        subscriptions, grants, redemptions, memberships, events = children
        return AccountState(
            user_id=user_id,
            version=integer(version),
            home_market=opt_text(home_market),
            subscriptions=SUBSCRIPTIONS.read(self, subscriptions),
            grants=GRANTS.read(self, grants),
            redemptions=REDEMPTIONS.read(self, redemptions),
            memberships=MEMBERSHIPS.read(self, memberships),
            subscription_events=SUBSCRIPTION_EVENTS.read(self, events),
            student_verified_until=self.opt_decode_ts(student_verified_until),
        )

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
            sub.folded_events,
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
            folded_events,
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
            folded_events=None if folded_events is None else integer(folded_events),
        )

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

    def membership_row(self, membership: HouseholdMembership) -> tuple[Any, ...]:
        return (
            membership.household_id,
            membership.role.value,
            membership.manager_user_id,
            self.encode_ts(membership.joined_at),
            self.opt_ts(membership.left_at),
            membership.member_user_id,
        )

    def membership(self, row: Sequence[Any]) -> HouseholdMembership:
        household_id, role, manager_user_id, joined_at, left_at, member_user_id = row
        return HouseholdMembership(
            household_id=text(household_id),
            role=HouseholdRole(role),
            manager_user_id=text(manager_user_id),
            joined_at=self.decode_ts(joined_at),
            left_at=self.opt_decode_ts(left_at),
            member_user_id=opt_text(member_user_id),
        )

    def event_row(self, event: StoredEvent) -> tuple[Any, ...]:
        return (
            event.subscription_id,
            event.event_id,
            event.kind,
            self.encode_ts(event.occurred_at),
            self.encode_ts(event.recorded_at),
            event.payload,
        )

    def event(self, row: Sequence[Any]) -> StoredEvent:
        subscription_id, event_id, kind, occurred_at, recorded_at, payload = row
        return StoredEvent(
            subscription_id=text(subscription_id),
            event_id=text(event_id),
            kind=text(kind),
            occurred_at=self.decode_ts(occurred_at),
            recorded_at=self.decode_ts(recorded_at),
            payload=text(payload),
        )

    def request_row(
        self, key: IdempotencyKey, response: str, version: int, recorded_at: datetime
    ) -> tuple[Any, ...]:
        """PROCESSED_REQUESTS columns."""
        return (
            key.kind,
            key.id,
            key.fingerprint,
            response,
            version,
            self.encode_ts(recorded_at),
        )

    def history_row(self, entry: HistoryEntry) -> tuple[Any, ...]:
        """HISTORY columns."""
        return (
            entry.kind,
            entry.reference,
            self.encode_ts(entry.effective_at),
            self.encode_ts(entry.recorded_at),
            entry.version,
            entry.summary,
        )

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


# The tables holding the tuples of AccountState, rewritten on every write of the state.
# processed_requests and history are deliberately not among them.
SUBSCRIPTIONS: ChildTable[Subscription] = ChildTable(
    "subscriptions",
    "subscriptions",
    (
        ("subscription_id", _TEXT), ("plan_id", _TEXT), ("status", _TEXT), ("store", _TEXT),
        ("started_at", _TS), ("current_period_end", _TS), ("grace_period_end", _TS),
        ("auto_renew", _BOOL), ("last_event_at", _TS), ("offer_id", _TEXT),
        ("folded_events", _INT),
    ),
    RowCodec.subscription_row,
    RowCodec.subscription,
)  # fmt: skip
GRANTS: ChildTable[Grant] = ChildTable(
    "grants",
    "grants",
    (
        ("grant_id", _TEXT), ("kind", _TEXT), ("feature_id", _TEXT), ("plan_id", _TEXT),
        ("quota_value", _INT), ("starts_at", _TS), ("expires_at", _TS), ("revoked_at", _TS),
    ),
    RowCodec.grant_row,
    RowCodec.grant,
)  # fmt: skip
REDEMPTIONS: ChildTable[Redemption] = ChildTable(
    "redemptions",
    "redemptions",
    (("offer_id", _TEXT), ("offer_group", _TEXT), ("redeemed_at", _TS), ("store", _TEXT)),
    RowCodec.redemption_row,
    RowCodec.redemption,
)
MEMBERSHIPS: ChildTable[HouseholdMembership] = ChildTable(
    "household_memberships",
    "memberships",
    (
        ("household_id", _TEXT), ("role", _TEXT), ("manager_user_id", _TEXT),
        ("joined_at", _TS), ("left_at", _TS), ("member_user_id", _TEXT),
    ),
    RowCodec.membership_row,
    RowCodec.membership,
)  # fmt: skip
# Every accepted event of the user's subscriptions (service.domain.events folds them):
# the event as sent (payload, JSON text), or a snapshot of compacted events.
SUBSCRIPTION_EVENTS: ChildTable[StoredEvent] = ChildTable(
    "subscription_events",
    "subscription_events",
    (
        ("subscription_id", _TEXT), ("event_id", _TEXT), ("kind", _TEXT),
        ("occurred_at", _TS), ("recorded_at", _TS), ("payload", _TEXT),
    ),
    RowCodec.event_row,
    RowCodec.event,
)  # fmt: skip
CHILD_TABLES: tuple[ChildTable[Any], ...] = (
    SUBSCRIPTIONS, GRANTS, REDEMPTIONS, MEMBERSHIPS, SUBSCRIPTION_EVENTS,
)  # fmt: skip
