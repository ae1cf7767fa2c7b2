"""The queries of the Spanner backend and the reading of their results.

`load`, and the read inside `apply`'s transaction, are one query each:
ARRAY subqueries return the user row and every child table (for `apply`, also the
processed request with the key), so one round trip reads a user's whole state in one
snapshot. An active household member's `load` reads the manager's subscriptions and
version with a second query at the first one's read timestamp (the same snapshot).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.cloud import spanner

from service.domain.account import AccountState, Household, HouseholdMembership
from service.domain.errors import StoreUnavailable
from storage.apply import Replay
from storage.rows import (
    CHILD_TABLES,
    HISTORY,
    POSITION,
    PROCESSED_REQUESTS,
    REPLAY_COLUMNS,
    SUBSCRIPTIONS,
    USER_ID,
    USERS,
    integer,
    text,
)
from storage.spanner import schema
from storage.spanner.codec import CODEC, Columns, columns, name

USER_COLUMNS = columns(USERS.columns)
SUBSCRIPTION_COLUMNS = columns(SUBSCRIPTIONS.columns)
REQUEST_COLUMNS = columns(REPLAY_COLUMNS)
HISTORY_COLUMNS = columns(HISTORY.columns)


@dataclass(frozen=True, slots=True)
class Query:
    """A query and its result columns: each is an ARRAY of STRUCTs with these fields."""

    sql: str
    columns: tuple[tuple[str, Columns], ...]


# (alias, table, columns, condition, order): one ARRAY column of a query.
_Part = tuple[str, str, Columns, str, str]


def _names(columns: Columns) -> str:
    return ", ".join(name for name, _ in columns)


def _array(alias: str, table: str, columns: Columns, where: str, order: str) -> str:
    return (
        f"ARRAY(SELECT AS STRUCT {_names(columns)} FROM {table} WHERE {where}"
        f"{f' ORDER BY {order}' if order else ''}) AS {alias}"
    )


_MINE = f"{name(USER_ID)} = @user_id"
# The household of an active member: the first membership as a member without left_at
# (storage.repository.household_membership, which the other backends use).
# The manager of that household is known from the member's state: the manager's rows are
# read by key (a scalar subquery naming the manager costs the emulator a scan of the
# tables, ~1 s per load at 1,100 users).
_MANAGER = f"{name(USER_ID)} = @manager_id"
_STATE: tuple[_Part, ...] = (
    ("account", name(USERS.name), USER_COLUMNS, _MINE, ""),
    *(
        (table.field, name(table.name), columns(table.columns), _MINE, name(POSITION))
        for table in CHILD_TABLES
    ),
)
_MANAGER_SUBSCRIPTIONS: _Part = (
    "manager_subscriptions", name(SUBSCRIPTIONS.name), SUBSCRIPTION_COLUMNS, _MANAGER,
    name(POSITION),
)  # fmt: skip
# The manager's version (Household.manager_version), in the same snapshot.
_MANAGER_VERSION: _Part = (
    "manager_version", name(USERS.name), USER_COLUMNS[:1], _MANAGER, "",
)  # fmt: skip
_REQUEST: _Part = (
    "request",
    name(PROCESSED_REQUESTS.name),
    REQUEST_COLUMNS,
    f"{_MINE} AND Kind = @kind AND RequestId = @request_id",
    "",
)


def _query(*parts: _Part) -> Query:
    return Query(
        "SELECT " + ", ".join(_array(*part) for part in parts),
        tuple((alias, columns) for alias, _, columns, _, _ in parts),
    )


# The user's state: `load`; for an active household member, then MANAGER_QUERY at the
# same read timestamp.
LOAD_QUERY = _query(*_STATE)
# The household manager's subscriptions and version.
MANAGER_QUERY = _query(_MANAGER_SUBSCRIPTIONS, _MANAGER_VERSION)
# The user's state and the processed request with the key, inside `apply`'s transaction.
APPLY_READ_QUERY = _query(*_STATE, _REQUEST)
HISTORY_QUERY = (
    f"SELECT {_names(HISTORY_COLUMNS)} FROM {name(HISTORY.name)} WHERE {_MINE}"
    " ORDER BY Version, Seq"
)
CHECK_QUERY = f"SELECT 1 FROM {schema.MIGRATIONS_TABLE} LIMIT 1"

_STRING = spanner.param_types.STRING
USER_PARAM_TYPES = {"user_id": _STRING}
MANAGER_PARAM_TYPES = {"manager_id": _STRING}
APPLY_PARAM_TYPES = {"user_id": _STRING, "kind": _STRING, "request_id": _STRING}


# -- reading the results -----------------------------------------------------------------


def first_row(rows: Any) -> Sequence[Any]:
    """The one row of a query above."""
    for row in rows:
        return list(row)
    raise StoreUnavailable("spanner answered a query without its row")


def account(user_id: str, row: Sequence[Any]) -> AccountState:
    """The state from a row of any query above."""
    users, *children = row[: len(_STATE)]
    return CODEC.account(user_id, users[0] if users else None, children)


def household(membership: HouseholdMembership, row: Sequence[Any]) -> Household:
    """The household of `membership` from a row of MANAGER_QUERY."""
    subscriptions, manager = row
    return Household(
        membership.household_id,
        membership.manager_user_id,
        SUBSCRIPTIONS.read(CODEC, subscriptions),
        int(manager[0][0]) if manager else 0,
    )


def replay(row: Sequence[Any]) -> Replay | None:
    """What was kept of the processed request, from a row of APPLY_READ_QUERY; None when
    the key is new."""
    seen = row[len(_STATE)]
    if not seen:
        return None
    fingerprint, response, version = seen[0]
    return Replay(text(fingerprint), text(response), integer(version))
