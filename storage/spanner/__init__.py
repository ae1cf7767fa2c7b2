"""Cloud Spanner backend (google-cloud-spanner): the production store.

Selected with the storage URL `spanner://projects/P/instances/I/databases/D`. Works
unchanged against Cloud Spanner (credentials from the environment: Application Default
Credentials) and against the emulator ($SPANNER_EMULATOR_HOST; with emulator 1.5.28 also
GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_FOR_RW=false, see the README).

Schema (migrations/, applied by `entitlements migrate`, see schema.py): one Users row per
user and every per-user table interleaved in it (ON DELETE CASCADE), so a user's state is
one locality group.

- `load` is one query in a single-use read-only snapshot: ARRAY subqueries return the
  user row and every child table, and the household manager's subscriptions (for an
  active member) in the same snapshot. Strong by default; `max_staleness` with
  `min_version` reads bounded-stale first and falls back to a strong read when that
  snapshot is older than the version the caller must see.
- `update` and `apply` run in `Database.run_in_transaction`: the function reads the state
  (and the processed request) with one query inside the transaction, computes, and
  buffers mutations; it has no other effects, since the client re-runs it after ABORTED.
  Every mutation is a keyed blind write (the child tables' rows replaced, the request row
  and the history rows keyed by (user, version, index)), so a re-run or a re-sent commit
  writes the same rows and never a duplicate. Exceptions from `change`/`mutate` roll the
  transaction back and propagate unchanged.
- Every call runs within the RPC's remaining budget (storage.deadline), or within
  `default_timeout` when the RPC set none; see client.py for how it reaches every
  Spanner RPC. Requests carry request tags ("load", "history", "update-read",
  "apply-grant-read"...) and transactions transaction tags ("update", "apply-grant"...),
  so Spanner's query and lock statistics show which RPC family they serve.
- One client and database handle per process, created on first use (after any worker
  fork) and kept; `close()` only detaches this repository (see client.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from google.cloud import spanner
from google.cloud.spanner_v1 import KeyRange, KeySet, TypeCode
from google.cloud.spanner_v1.database import Database
from google.cloud.spanner_v1.transaction import Transaction

from service.domain.account import (
    AccountState,
    Household,
    HouseholdRole,
    UserState,
)
from storage.deadline import deadline_in, remaining
from storage.repository import (
    AccountChange,
    AccountMutation,
    Applied,
    HistoryEntry,
    IdempotencyConflict,
    IdempotencyKey,
    StoreUnavailable,
)
from storage.rows import RowCodec, dump_response, integer, load_response, opt_text, utc
from storage.spanner import schema
from storage.spanner.client import (
    URL_PREFIX,
    DatabasePath,
    SchemaNotReady,
    create_on_emulator,
    database_handle,
    store_call,
)

__all__ = [
    "APPLY_READ_QUERY",
    "LOAD_QUERY",
    "SUBSCRIPTION_COLUMNS",
    "UPDATE_READ_QUERY",
    "URL_PREFIX",
    "DatabasePath",
    "Query",
    "SchemaNotReady",
    "SpannerRepository",
    "migrate",
]

DEFAULT_TIMEOUT = 10.0  # a store call's budget when the RPC gave none
# Backoff before re-running an aborted transaction: doubling from this, capped, jittered
# (see SpannerRepository._transact).
DEFAULT_ABORT_RETRY_DELAY = 0.01
# Staleness bound of token-carrying reads (10 s or more is advised for bounded staleness).
DEFAULT_STALE_READ: timedelta | None = timedelta(seconds=10)
MAX_ABORT_RETRY_DELAY = 0.5

T = TypeVar("T")

# -- queries -------------------------------------------------------------------------------

Columns = tuple[tuple[str, TypeCode], ...]

_S, _I, _B, _T = TypeCode.STRING, TypeCode.INT64, TypeCode.BOOL, TypeCode.TIMESTAMP
USER_COLUMNS: Columns = (("Version", _I), ("HomeMarket", _S), ("StudentVerifiedUntil", _T))
SUBSCRIPTION_COLUMNS: Columns = (
    ("SubscriptionId", _S), ("PlanId", _S), ("Status", _S), ("Store", _S), ("StartedAt", _T),
    ("CurrentPeriodEnd", _T), ("GracePeriodEnd", _T), ("AutoRenew", _B), ("LastEventAt", _T),
    ("OfferId", _S),
)  # fmt: skip
GRANT_COLUMNS: Columns = (
    ("GrantId", _S), ("Kind", _S), ("FeatureId", _S), ("PlanId", _S), ("QuotaValue", _I),
    ("StartsAt", _T), ("ExpiresAt", _T), ("RevokedAt", _T),
)  # fmt: skip
REDEMPTION_COLUMNS: Columns = (
    ("OfferId", _S), ("OfferGroup", _S), ("RedeemedAt", _T), ("Store", _S),
)  # fmt: skip
MEMBERSHIP_COLUMNS: Columns = (
    ("HouseholdId", _S), ("Role", _S), ("ManagerUserId", _S), ("JoinedAt", _T), ("LeftAt", _T),
)  # fmt: skip
REQUEST_COLUMNS: Columns = (("Fingerprint", _S), ("Response", _S), ("Version", _I))
HISTORY_COLUMNS: Columns = (
    ("Kind", _S), ("Reference", _S), ("EffectiveAt", _T), ("RecordedAt", _T), ("Version", _I),
    ("Summary", _S),
)  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class Query:
    """A query and its result columns: each is an ARRAY of STRUCTs with these fields."""

    sql: str
    columns: tuple[tuple[str, Columns], ...]


def _names(columns: Columns) -> str:
    return ", ".join(name for name, _ in columns)


def _array(alias: str, table: str, columns: Columns, where: str, order: str) -> str:
    return (
        f"ARRAY(SELECT AS STRUCT {_names(columns)} FROM {table} WHERE {where}"
        f"{f' ORDER BY {order}' if order else ''}) AS {alias}"
    )


_MINE = "UserId = @user_id"
# The household of an active member: the first membership as a member without left_at
# (the order of AccountState.memberships), as the other backends decide it.
_MANAGER = (
    "UserId = (SELECT m.ManagerUserId FROM HouseholdMemberships AS m"
    f" WHERE m.UserId = @user_id AND m.Role = '{HouseholdRole.MEMBER.value}'"
    " AND m.LeftAt IS NULL ORDER BY m.Position LIMIT 1)"
)
_STATE: tuple[tuple[str, str, Columns, str, str], ...] = (
    ("account", "Users", USER_COLUMNS, _MINE, ""),
    ("subscriptions", "Subscriptions", SUBSCRIPTION_COLUMNS, _MINE, "Position"),
    ("grants", "Grants", GRANT_COLUMNS, _MINE, "Position"),
    ("redemptions", "Redemptions", REDEMPTION_COLUMNS, _MINE, "Position"),
    ("memberships", "HouseholdMemberships", MEMBERSHIP_COLUMNS, _MINE, "Position"),
)
_MANAGER_SUBSCRIPTIONS = (
    "manager_subscriptions", "Subscriptions", SUBSCRIPTION_COLUMNS, _MANAGER, "Position"
)  # fmt: skip
_REQUEST = (
    "request",
    "ProcessedRequests",
    REQUEST_COLUMNS,
    "UserId = @user_id AND Kind = @kind AND RequestId = @request_id",
    "",
)


def _query(*parts: tuple[str, str, Columns, str, str]) -> Query:
    return Query(
        "SELECT " + ", ".join(_array(*part) for part in parts),
        tuple((alias, columns) for alias, _, columns, _, _ in parts),
    )


# The user's state and household: `load`.
LOAD_QUERY = _query(*_STATE, _MANAGER_SUBSCRIPTIONS)
# The user's state, inside `update`'s transaction.
UPDATE_READ_QUERY = _query(*_STATE)
# The user's state and the processed request with the key, inside `apply`'s transaction.
APPLY_READ_QUERY = _query(*_STATE, _REQUEST)
HISTORY_QUERY = (
    f"SELECT {_names(HISTORY_COLUMNS)} FROM History WHERE UserId = @user_id ORDER BY Version, Seq"
)
CHECK_QUERY = f"SELECT 1 FROM {schema.MIGRATIONS_TABLE} LIMIT 1"

_REQUEST_WRITE_COLUMNS = (
    "UserId", "Kind", "RequestId", "Fingerprint", "Response", "Version", "RecordedAt",
)  # fmt: skip
_HISTORY_WRITE_COLUMNS = (
    "UserId", "Version", "Seq", "Kind", "Reference", "EffectiveAt", "RecordedAt", "Summary",
)  # fmt: skip

_STRING = spanner.param_types.STRING
_USER_PARAM_TYPES = {"user_id": _STRING}
_APPLY_PARAM_TYPES = {"user_id": _STRING, "kind": _STRING, "request_id": _STRING}


class SpannerRepository:
    """An AccountRepository on one Cloud Spanner (or emulator) database.

    `path` is `projects/P/instances/I/databases/D` (a spanner:// URL is accepted too).
    `endpoint` ("host:port") talks plain text without credentials to an emulator or test
    server; otherwise the client library's rules apply ($SPANNER_EMULATOR_HOST, else
    Cloud Spanner with Application Default Credentials). `default_timeout` bounds each
    call made without an RPC deadline (storage.deadline). `abort_retry_delay` is the
    first backoff before re-running an aborted transaction (doubling on each re-run).
    `stale_read` is the staleness bound of reads that carry a consistency token (None:
    always strong reads).
    """

    def __init__(
        self,
        path: str | DatabasePath,
        *,
        endpoint: str | None = None,
        default_timeout: float = DEFAULT_TIMEOUT,
        abort_retry_delay: float = DEFAULT_ABORT_RETRY_DELAY,
        stale_read: timedelta | None = DEFAULT_STALE_READ,
    ) -> None:
        self._path = path if isinstance(path, DatabasePath) else DatabasePath.parse(path)
        self._stale_read = stale_read
        self._endpoint = endpoint
        self._default_timeout = default_timeout
        self._abort_retry_delay = abort_retry_delay
        self._lock = threading.Lock()
        self._closed = False
        self._schema_ready = False

    @property
    def path(self) -> DatabasePath:
        return self._path

    # -- AccountRepository ---------------------------------------------------------------

    def load(self, user_id: str, *, min_version: int = 0) -> UserState:
        """The user's state and household, as AccountRepository.load.

        Without `min_version` a strong read. With one (from a consistency token), first a
        bounded-staleness read (at most `stale_read` old: cheaper, and served by the
        nearest replica in multi-region configurations); if that snapshot is older than
        `min_version`, a strong read."""
        with self._call("load") as database:
            if min_version > 0 and self._stale_read is not None:
                state = self._load(database, user_id, "load-stale", self._stale_read)
                if state.account.version >= min_version:
                    return state
            return self._load(database, user_id, "load", None)

    def update(self, user_id: str, change: AccountChange) -> AccountState:
        def work(transaction: Transaction) -> AccountState:
            row = _first(
                transaction.execute_sql(
                    UPDATE_READ_QUERY.sql,
                    params={"user_id": user_id},
                    param_types=_USER_PARAM_TYPES,
                    request_options={"request_tag": "update-read"},
                    timeout=remaining(),
                )
            )
            current = _account(user_id, row)
            # Whatever `change` raises rolls back and propagates unchanged.
            desired = change(current)
            stored = dataclasses.replace(desired, user_id=user_id, version=current.version + 1)
            _write_account(transaction, current, stored)
            return stored

        with self._call("update") as database:
            return self._transact(database, work, "update")

    def apply(
        self,
        user_id: str,
        key: IdempotencyKey,
        mutate: AccountMutation,
        recorded_at: datetime,
    ) -> Applied:
        recorded = utc(recorded_at)  # a naive time fails before any transaction
        tag = _tag(f"apply-{key.kind}")

        def work(transaction: Transaction) -> Applied:
            row = _first(
                transaction.execute_sql(
                    APPLY_READ_QUERY.sql,
                    params={"user_id": user_id, "kind": key.kind, "request_id": key.id},
                    param_types=_APPLY_PARAM_TYPES,
                    request_options={"request_tag": f"{tag}-read"},
                    timeout=remaining(),
                )
            )
            current = _account(user_id, row)
            seen = row[len(_STATE)]
            if seen:
                fingerprint, response, version = seen[0]
                if fingerprint != key.fingerprint:
                    raise IdempotencyConflict(f"{key.kind} id reused with another request")
                return Applied(current, integer(version), load_response(response), replayed=True)
            # Whatever `mutate` raises rolls back and propagates unchanged.
            mutation = mutate(current)
            version = current.version + 1
            stored = dataclasses.replace(mutation.state, user_id=user_id, version=version)
            response = dump_response(mutation.response)
            history = [
                (
                    user_id,
                    version,
                    index,
                    draft.kind,
                    draft.reference,
                    utc(draft.effective_at),
                    recorded,
                    draft.summary,
                )
                for index, draft in enumerate(mutation.history)
            ]
            _write_account(transaction, current, stored)
            transaction.insert_or_update(
                "ProcessedRequests",
                columns=_REQUEST_WRITE_COLUMNS,
                values=[(user_id, key.kind, key.id, key.fingerprint, response, version, recorded)],
            )
            if history:
                transaction.insert_or_update(
                    "History",
                    columns=_HISTORY_WRITE_COLUMNS,
                    values=history,
                )
            # Through JSON, like a replay, so the first answer and its replays are equal.
            return Applied(stored, version, load_response(response), replayed=False)

        with self._call(tag) as database:
            return self._transact(database, work, tag)

    def history(self, user_id: str) -> list[HistoryEntry]:
        with self._call("history") as database, database.snapshot() as snapshot:
            rows = snapshot.execute_sql(
                HISTORY_QUERY,
                params={"user_id": user_id},
                param_types=_USER_PARAM_TYPES,
                request_options={"request_tag": "history"},
                timeout=remaining(),
            )
            return [_ROWS.history_entry(row) for row in rows]

    def check(self) -> None:
        """Raises StoreUnavailable (SchemaNotReady for a missing migration) unless the
        database answers and has the schema this build needs."""
        with self._call("check", verify_schema=False) as database:
            if not self._schema_ready:
                schema.ensure_ready(database, self._path)
                self._schema_ready = True
                return
            # Checked already: one cheap query (the readiness probe calls this often).
            with database.snapshot() as snapshot:
                list(
                    snapshot.execute_sql(
                        CHECK_QUERY, request_options={"request_tag": "check"}, timeout=remaining()
                    )
                )

    def close(self) -> None:
        """Detaches this repository; the process's client and database handle stay (see
        client.py: closing them can block for minutes)."""
        with self._lock:
            self._closed = True

    # -- internals -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _call(self, what: str, *, verify_schema: bool = True) -> Iterator[Database]:
        """One store call (see client.store_call), with this process's database handle."""
        with self._lock:
            if self._closed:
                raise StoreUnavailable("spanner repository is closed")
        with store_call(self._path, what, self._default_timeout):
            yield self._database(verify_schema)

    def _database(self, verify_schema: bool) -> Database:
        database = database_handle(self._path, self._endpoint)
        if verify_schema and not self._schema_ready:
            schema.ensure_ready(database, self._path)
            self._schema_ready = True
        return database

    def _load(
        self,
        database: Database,
        user_id: str,
        tag: str,
        max_staleness: timedelta | None,
    ) -> UserState:
        options = {} if max_staleness is None else {"max_staleness": max_staleness}
        with database.snapshot(**options) as snapshot:
            row = _first(
                snapshot.execute_sql(
                    LOAD_QUERY.sql,
                    params={"user_id": user_id},
                    param_types=_USER_PARAM_TYPES,
                    request_options={"request_tag": tag},
                    timeout=remaining(),
                )
            )
        account = _account(user_id, row)
        return UserState(account, _household(account, row[len(_STATE)]))

    def _transact(self, database: Database, work: Callable[[Transaction], T], tag: str) -> T:
        """Runs `work` in a read-write transaction, re-run after ABORTED until the call's
        budget is spent. Before a re-run it waits what Spanner asked for (RetryInfo, done
        by the client) plus a jittered exponential backoff from `abort_retry_delay` (done
        here): the client's own fallback, 2**attempt seconds when Spanner gives no delay,
        would outlast any RPC, and a fixed short one makes many contenders spin."""
        attempts = 0

        def attempt(transaction: Transaction) -> T:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                self._back_off(attempts - 1)
            return work(transaction)

        budget = remaining()
        result: T = database.run_in_transaction(
            attempt,
            transaction_tag=tag,
            # Stop re-running after ABORTED when the call's budget is spent.
            timeout_secs=self._default_timeout if budget is None else budget,
            default_retry_delay=0.0,
        )
        return result

    def _back_off(self, retry: int) -> None:
        """Sleeps before the `retry`-th re-run (no transaction is open meanwhile)."""
        delay = min(MAX_ABORT_RETRY_DELAY, self._abort_retry_delay * 2 ** (retry - 1))
        delay *= random.uniform(0.5, 1.5)
        left = remaining()
        time.sleep(delay if left is None else max(0.0, min(delay, left)))


def migrate(
    path: str | DatabasePath,
    *,
    endpoint: str | None = None,
    timeout: float = schema.DEFAULT_DDL_TIMEOUT,
) -> list[str]:
    """Applies the pending schema migrations to the database (`entitlements migrate`);
    returns the names of those applied, empty when it was up to date. Against an emulator
    it first creates the instance and the database if they are missing."""
    database_path = path if isinstance(path, DatabasePath) else DatabasePath.parse(path)
    with deadline_in(timeout), store_call(database_path, "migration", timeout):
        create_on_emulator(database_path, endpoint, timeout)
        return schema.migrate(database_handle(database_path, endpoint), timeout=timeout)


# -- reading -------------------------------------------------------------------------------


def _first(rows: Any) -> Sequence[Any]:
    for row in rows:
        return list(row)
    raise StoreUnavailable("spanner answered a query without its row")


def _account(user_id: str, row: Sequence[Any]) -> AccountState:
    users, subscriptions, grants, redemptions, memberships = row[: len(_STATE)]
    if not users:
        return AccountState.new(user_id)
    version, home_market, student_verified_until = users[0]
    return AccountState(
        user_id=user_id,
        version=integer(version),
        home_market=opt_text(home_market),
        subscriptions=tuple(_ROWS.subscription(s) for s in subscriptions),
        grants=tuple(_ROWS.grant(g) for g in grants),
        redemptions=tuple(_ROWS.redemption(r) for r in redemptions),
        memberships=tuple(_ROWS.membership(m) for m in memberships),
        student_verified_until=_ROWS.opt_decode_ts(student_verified_until),
    )


def _household(account: AccountState, manager_subscriptions: Sequence[Any]) -> Household | None:
    for membership in account.memberships:
        if membership.role is HouseholdRole.MEMBER and membership.left_at is None:
            return Household(
                membership.household_id,
                membership.manager_user_id,
                tuple(_ROWS.subscription(s) for s in manager_subscriptions),
            )
    return None


# -- writing -------------------------------------------------------------------------------


def _user_rows(user_id: str) -> KeySet:
    """Every row of a child table under the user (a key prefix)."""
    return KeySet(ranges=[KeyRange(start_closed=[user_id], end_closed=[user_id])])


def _write_account(transaction: Transaction, current: AccountState, stored: AccountState) -> None:
    """Buffers mutations that store `stored` (version included) in place of `current`,
    the state read in this transaction: the user row, and each child table's rows
    deleted (if there were any) and written again."""
    user_id = stored.user_id
    transaction.insert_or_update(
        "Users",
        columns=("UserId", "Version", "HomeMarket", "StudentVerifiedUntil"),
        values=[
            (
                user_id,
                stored.version,
                stored.home_market,
                _ROWS.opt_ts(stored.student_verified_until),
            )
        ],
    )
    children: tuple[tuple[str, Columns, bool, list[tuple[Any, ...]]], ...] = (
        (
            "Subscriptions",
            SUBSCRIPTION_COLUMNS,
            bool(current.subscriptions),
            [
                (user_id, position, *_ROWS.subscription_row(sub))
                for position, sub in enumerate(stored.subscriptions)
            ],
        ),
        (
            "Grants",
            GRANT_COLUMNS,
            bool(current.grants),
            [
                (user_id, position, *_ROWS.grant_row(grant))
                for position, grant in enumerate(stored.grants)
            ],
        ),
        (
            "Redemptions",
            REDEMPTION_COLUMNS,
            bool(current.redemptions),
            [
                (user_id, position, *_ROWS.redemption_row(redemption))
                for position, redemption in enumerate(stored.redemptions)
            ],
        ),
        (
            "HouseholdMemberships",
            MEMBERSHIP_COLUMNS,
            bool(current.memberships),
            [
                (user_id, position, *_ROWS.membership_row(membership))
                for position, membership in enumerate(stored.memberships)
            ],
        ),
    )
    for table, columns, had_rows, rows in children:
        if had_rows:
            transaction.delete(table, _user_rows(user_id))
        if rows:
            # `replace` rather than `insert`: the same rows again if a commit is re-sent.
            transaction.replace(
                table, columns=("UserId", "Position", *(n for n, _ in columns)), values=rows
            )


# -- values --------------------------------------------------------------------------------


def _tag(text: str) -> str:
    """A request or transaction tag: printable ASCII, at most 50 characters."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:50]


def _parse_ts(value: object) -> datetime:
    """A plain UTC datetime (the client returns its DatetimeWithNanoseconds subclass)."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected TIMESTAMP in the database, got {type(value).__name__}")
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return datetime(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        tzinfo=UTC,
    )


# Spanner has TIMESTAMP and BOOL columns: aware datetimes and booleans as they are.
_ROWS = RowCodec(encode_ts=utc, decode_ts=_parse_ts)
