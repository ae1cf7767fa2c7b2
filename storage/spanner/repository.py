"""SpannerRepository: the AccountRepository on one Cloud Spanner (or emulator) database
(see the package docstring for reads, transactions, budgets and tags)."""

from __future__ import annotations

import contextlib
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TypeVar

from google.api_core import exceptions as api_exceptions
from google.cloud.spanner_v1.database import Database
from google.cloud.spanner_v1.transaction import Transaction

from service.domain.account import UserState
from service.domain.deadlines import store_seconds_left
from service.domain.errors import StoreUnavailable
from storage.apply import AppliesWrites, IdempotentWrite
from storage.feed import BATCH_LIMIT, ChangeBatch
from storage.observers import transaction_aborted
from storage.repository import Applied, HistoryEntry, household_membership
from storage.spanner import changes, mutations, queries, schema
from storage.spanner.client import DatabasePath, SchemaNotReady, database_handle, store_call
from storage.spanner.codec import CODEC

DEFAULT_TIMEOUT = 10.0  # a store call's budget when the RPC gave none
# Backoff before re-running an aborted transaction: doubling from this, capped, jittered
# (see SpannerRepository._transact).
DEFAULT_ABORT_RETRY_DELAY = 0.01
# Staleness bound of token-carrying reads (10 s or more is advised for bounded staleness).
DEFAULT_STALE_READ: timedelta | None = timedelta(seconds=10)
MAX_ABORT_RETRY_DELAY = 0.5

T = TypeVar("T")


class SpannerRepository(AppliesWrites):
    """An AccountRepository on one Cloud Spanner (or emulator) database.

    `path` is `projects/P/instances/I/databases/D` (a spanner:// URL is accepted too).
    `endpoint` ("host:port") talks plain text without credentials to an emulator or test
    server; otherwise the client library's rules apply ($SPANNER_EMULATOR_HOST, else
    Cloud Spanner with Application Default Credentials). `default_timeout` bounds each
    call made without an RPC deadline (service.domain.deadlines). `abort_retry_delay` is the
    first backoff before re-running an aborted transaction (doubling on each re-run).
    `stale_read` is the staleness bound of reads that carry a consistency token (None:
    always strong reads). `feed_retention` is how old a change feed position may be
    before reading from it reports a gap: at most what UserChanges keeps (its ROW
    DELETION POLICY, changes.FEED_RETENTION); tests make it short.
    """

    def __init__(
        self,
        path: str | DatabasePath,
        *,
        endpoint: str | None = None,
        default_timeout: float = DEFAULT_TIMEOUT,
        abort_retry_delay: float = DEFAULT_ABORT_RETRY_DELAY,
        stale_read: timedelta | None = DEFAULT_STALE_READ,
        feed_retention: timedelta = changes.FEED_RETENTION,
    ) -> None:
        if not timedelta(0) < feed_retention <= changes.FEED_RETENTION:
            raise ValueError(f"feed_retention must be in (0, {changes.FEED_RETENTION}]")
        self._feed_retention = feed_retention
        self._path = path if isinstance(path, DatabasePath) else DatabasePath.parse(path)
        self._stale_read = stale_read
        self._endpoint = endpoint
        self._default_timeout = default_timeout
        self._abort_retry_delay = abort_retry_delay
        self._lock = threading.Lock()
        self._closed = False
        self._schema_ready = False
        # Bounded-staleness reads: "kept", or "too old" (a strong read followed).
        self.stale_reads = {"kept": 0, "too old": 0}

    @property
    def stale_read_seconds(self) -> float | None:
        """storage.repository.BoundedStalenessReads."""
        return None if self._stale_read is None else self._stale_read.total_seconds()

    @property
    def path(self) -> DatabasePath:
        return self._path

    # -- AccountRepository ---------------------------------------------------------------

    def load(self, user_id: str, *, min_version: int = 0, stale_ok: bool = False) -> UserState:
        """The user's state and household, as AccountRepository.load.

        Without `min_version` or `stale_ok` a strong read. With `min_version` (from a
        consistency token), first a bounded-staleness read (at most `stale_read` old:
        cheaper, and served by the nearest replica in multi-region configurations). With
        `stale_ok` (a token-less read the change feed vouches for), a read exactly
        `stale_read` old: a replica serves a timestamp that far back at once, without
        asking the leader. Either is kept when at least `min_version` new, else a strong
        read follows. `stale_reads` counts both outcomes."""
        with self._call("load") as database:
            if (min_version > 0 or stale_ok) and self._stale_read is not None:
                state = self._load(
                    database, user_id, "load-stale", self._stale_read, exact=stale_ok
                )
                if state.account.version >= min_version:
                    self.stale_reads["kept"] += 1
                    return state
                self.stale_reads["too old"] += 1
            return self._load(database, user_id, "load", None)

    def _run_write(self, write: IdempotentWrite) -> Applied:
        tag = _tag(f"apply-{write.key.kind}")
        with self._call(tag) as database:
            return self._transact(
                database, lambda transaction: write.run(mutations.Write(transaction, tag)), tag
            )

    def history(self, user_id: str) -> list[HistoryEntry]:
        with self._call("history") as database, database.snapshot() as snapshot:
            rows = snapshot.execute_sql(
                queries.HISTORY_QUERY,
                params={"user_id": user_id},
                param_types=queries.USER_PARAM_TYPES,
                request_options={"request_tag": "history"},
                timeout=store_seconds_left(),
            )
            return [CODEC.history_entry(row) for row in rows]

    # -- ChangeFeed (storage.feed; see changes.py for the table, positions and gaps) ------

    def feed_position(self) -> str:
        with self._call("feed-position") as database:
            return changes.feed_position(database, self._feed_retention)

    def read_changes(self, after: str, limit: int = BATCH_LIMIT) -> ChangeBatch:
        """A strong read of the changes after `after` (exact: see changes.py)."""
        with self._call("feed-read") as database:
            return changes.read_changes(database, after, limit, self._feed_retention)

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
                        queries.CHECK_QUERY,
                        request_options={"request_tag": "check"},
                        timeout=store_seconds_left(),
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
            database = self._database(verify_schema)
            try:
                yield database
            except api_exceptions.InvalidArgument as exc:
                # A statement the database does not support: it may have lost the schema
                # since it was checked (recreated, restored, a table dropped). Check again:
                # a missing migration is SchemaNotReady (the store cannot serve: UNAVAILABLE
                # and health NOT_SERVING until `migrate`), anything else stays what it is.
                self._schema_ready = False
                self._recheck_schema(database, exc)
                raise

    def _recheck_schema(self, database: Database, cause: Exception) -> None:
        try:
            schema.ensure_ready(database, self._path)
        except SchemaNotReady as missing:
            raise missing from cause
        except Exception:  # cannot tell now; the next call checks before it runs
            return
        self._schema_ready = True

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
        *,
        exact: bool = False,
    ) -> UserState:
        options = (
            {}
            if max_staleness is None
            else {"exact_staleness" if exact else "max_staleness": max_staleness}
        )
        with database.snapshot(**options) as snapshot:
            results = snapshot.execute_sql(
                queries.LOAD_QUERY.sql,
                params={"user_id": user_id},
                param_types=queries.USER_PARAM_TYPES,
                request_options={"request_tag": tag},
                timeout=store_seconds_left(),
            )
            row = queries.first_row(results)
        account = queries.account(user_id, row)
        membership = household_membership(account)
        if membership is None:
            return UserState(account, None)
        # The manager's rows as of the same snapshot: at the first read's timestamp.
        read_at = results.metadata.transaction.read_timestamp
        with database.snapshot(read_timestamp=read_at) as snapshot:
            row = queries.first_row(
                snapshot.execute_sql(
                    queries.MANAGER_QUERY.sql,
                    params={"manager_id": membership.manager_user_id},
                    param_types=queries.MANAGER_PARAM_TYPES,
                    request_options={"request_tag": f"{tag}-household"},
                    timeout=store_seconds_left(),
                )
            )
        return UserState(account, queries.household(membership, row))

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
            if attempts > 1:  # the previous attempt aborted
                transaction_aborted("spanner")
                self._back_off(attempts - 1)
            return work(transaction)

        budget = store_seconds_left()
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
        left = store_seconds_left()
        time.sleep(delay if left is None else max(0.0, min(delay, left)))


def _tag(text: str) -> str:
    """A request or transaction tag: printable ASCII, at most 50 characters."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:50]
