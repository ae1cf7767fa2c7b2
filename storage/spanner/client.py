"""Spanner handles and calls: one client and database handle per process, every Spanner
RPC bounded by the store call's budget, and Spanner errors as the repository's errors.

Handles are created on first use and kept for the life of the process (keyed by process
id, so a worker forked after the parent opened one builds its own). They are never
closed: `Database.close()` joins the multiplexed-session maintenance thread, which can
take minutes (it sleeps in 10-minute steps); that thread is a daemon and the sessions
expire on the server.

Budget: a store call runs within the RPC's remaining time (service.domain.deadlines), or within
the repository's default when the RPC set none, and the whole of it does, the client's
own retries and session creation included. Every data-plane Spanner RPC the client sends
from the calling thread (queries, BeginTransaction, Commit, Rollback, session creation)
goes through two hooks on the client we build:
- each method as the client calls it (_BudgetedMethod): nothing is sent once the budget
  is spent, and the method's retries stop when the budget does. The library's defaults
  retry UNAVAILABLE for 30 s (CreateSession) to an hour (Commit), and against a refused
  connection (Spanner or the emulator down) each attempt fails at once, so a deadline
  on each attempt alone never ends the loop. A streaming query the library restarts
  after UNAVAILABLE (at once, without limit) waits a short backoff first.
- each attempt (_BudgetInterceptor, on the channel): its gRPC deadline is what is left.
An explicit `timeout=` on the calls we make would cover neither the library's own calls
nor its retries.

Transactions: Database.run_in_transaction in google-cloud-spanner 3.71 can leave its
thread-local "transaction running" flag set when checking out a session fails (see
_BudgetedDatabase.run_in_transaction), which made every later write on that thread fail
("Spanner does not support nested transactions."); the flag is cleared here, and the
error, should it appear anyway, means UNAVAILABLE.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import google.auth.credentials
import grpc
from google.api_core import exceptions as api_exceptions
from google.api_core import gapic_v1
from google.api_core import retry as api_retry
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import spanner
from google.cloud.spanner_v1.database import Database
from google.cloud.spanner_v1.pool import BurstyPool
from google.cloud.spanner_v1.services.spanner import SpannerClient
from google.cloud.spanner_v1.services.spanner.transports.grpc import SpannerGrpcTransport

from service.domain.deadlines import store_seconds_left, within_store_deadline
from service.domain.errors import DeadlineExceeded, StoreUnavailable

log = logging.getLogger(__name__)

URL_PREFIX = "spanner://"
EMULATOR_HOST_ENV = "SPANNER_EMULATOR_HOST"
# Emulator 1.5.28 loses read-write transactions on multiplexed sessions ("Transaction not
# found" under concurrency): against it, set this to "false" (see docs/SPANNER.md).
MULTIPLEXED_RW_ENV = "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_FOR_RW"
SPANNER_DATA_SCOPE = "https://www.googleapis.com/auth/spanner.data"

# The deadline given to a Spanner RPC issued after the budget ran out: it fails at once
# with DEADLINE_EXCEEDED inside the library, which then stops (and rolls back) cleanly.
_SPENT = 0.001
# The backoff before the library sends a request again (a streaming query restarted after
# UNAVAILABLE): doubling from this, capped, within the store call's budget.
RESEND_BACKOFF = 0.01
MAX_RESEND_BACKOFF = 0.25

_PATH = re.compile(r"projects/([^/]+)/instances/([^/]+)/databases/([^/]+)")


class SchemaNotReady(StoreUnavailable):
    """The database lacks tables this build needs: run `entitlements migrate`."""


@dataclass(frozen=True, slots=True)
class DatabasePath:
    project: str
    instance: str
    database: str

    @classmethod
    def parse(cls, path: str) -> DatabasePath:
        """`projects/P/instances/I/databases/D`, with or without the spanner:// prefix."""
        match = _PATH.fullmatch(path.removeprefix(URL_PREFIX))
        if match is None:
            raise ValueError(
                f"{path!r}: expected {URL_PREFIX}projects/PROJECT/instances/INSTANCE"
                "/databases/DATABASE"
            )
        return cls(*match.groups())

    @property
    def name(self) -> str:
        return f"projects/{self.project}/instances/{self.instance}/databases/{self.database}"

    @property
    def url(self) -> str:
        return URL_PREFIX + self.name


# -- the budget of a store call ------------------------------------------------------------


def _rpc_budget() -> float | None:
    """The seconds a Spanner RPC may take now: what is left of the store call's budget."""
    try:
        return store_seconds_left()
    except DeadlineExceeded:
        return _SPENT


def _budget_left() -> float | None:
    """What is left of the store call's budget (None outside a store call, as in the
    client's own background threads). Once it is spent, raises google-api-core's
    DeadlineExceeded, which the library takes as final: no retry, no restart."""
    try:
        return store_seconds_left()
    except DeadlineExceeded:
        raise api_exceptions.DeadlineExceeded(  # type: ignore[no-untyped-call]
            "the store call's budget is spent: Spanner RPC not sent"
        ) from None


def _budget_spent() -> bool:
    try:
        store_seconds_left()
    except DeadlineExceeded:
        return True
    return False


class _Resends(threading.local):
    """The last request a thread sent, and how many times in a row it sent it again."""

    request: object = None
    count: int = 0


_resends = _Resends()


def _pause_before_resend(request: object, left: float) -> bool:
    """The library sends the same request object again when it restarts a streaming
    query after UNAVAILABLE, at once and without limit: against a refused connection that
    spins the thread for the whole budget. Each re-send waits a doubling backoff first
    (within the budget); a new request starts over."""
    if request is None or request is not _resends.request:
        _resends.request, _resends.count = request, 0
        return False
    _resends.count += 1
    delay = min(RESEND_BACKOFF * 2 ** (_resends.count - 1), MAX_RESEND_BACKOFF)
    time.sleep(min(delay, left))
    return True


class _BudgetedMethod:
    """One Spanner method as the client calls it (google-api-core's wrapper, which applies
    the method's retries and timeout), made to end within the store call's budget:
    - nothing is sent once the budget is spent (DeadlineExceeded);
    - the method's retries, its default ones included, stop when the budget does:
      google-api-core raises RetryError rather than sleep past a retry's timeout, and
      the timeout is what is left (the defaults retry UNAVAILABLE for 30 s to an hour,
      and against a refused connection each attempt fails at once, so capping each
      attempt's deadline alone never ends the loop; CreateSession is one);
    - a request the library sends again (a restarted streaming query) waits a backoff.
    Each attempt's own deadline is capped by _BudgetInterceptor. Outside a store call
    (the client's background threads) the method is called unchanged."""

    def __init__(self, method: Callable[..., Any]) -> None:
        self._method = method
        self._default_retry = getattr(method, "_retry", None)

    def __call__(self, *args: Any, retry: Any = gapic_v1.method.DEFAULT, **kwargs: Any) -> Any:
        left = _budget_left()
        if left is None:
            return self._method(*args, retry=retry, **kwargs)
        if retry is gapic_v1.method.DEFAULT:
            retry = self._default_retry
        if isinstance(retry, api_retry.Retry):
            timeout = left if retry.timeout is None else min(retry.timeout, left)
            retry = retry.with_timeout(timeout)
        if _pause_before_resend(args[0] if args else kwargs.get("request"), left):
            _budget_left()  # raises if the pause used up the budget
        return self._method(*args, retry=retry, **kwargs)


class _BudgetedTransport(SpannerGrpcTransport):  # type: ignore[misc]
    """SpannerGrpcTransport whose methods (as the client calls them, with their retries)
    are _BudgetedMethods."""

    def _prep_wrapped_messages(self, client_info: Any) -> None:
        super()._prep_wrapped_messages(client_info)
        wrapped: dict[Any, Callable[..., Any]] = self._wrapped_methods  # type: ignore[has-type]
        self._wrapped_methods = {stub: _BudgetedMethod(method) for stub, method in wrapped.items()}


class _CallDetails(grpc.ClientCallDetails):
    """The details of a call, with another timeout."""

    def __init__(self, details: grpc.ClientCallDetails, timeout: float) -> None:
        self.method = details.method
        self.timeout = timeout
        self.metadata = details.metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class _BudgetInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Caps the deadline of every call at the budget left in the calling thread's
    context (no cap when there is none, as in the client's own background threads)."""

    @staticmethod
    def _capped(details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        budget = _rpc_budget()
        if budget is None:
            return details
        timeout = budget if details.timeout is None else min(details.timeout, budget)
        return _CallDetails(details, timeout)

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._capped(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._capped(details), request)


_INTERCEPTOR = _BudgetInterceptor()


def _budgeted_channel(*args: Any, **kwargs: Any) -> grpc.Channel:
    """SpannerGrpcTransport's own channel (endpoint, credentials, options), intercepted."""
    channel = SpannerGrpcTransport.create_channel(*args, **kwargs)
    return grpc.intercept_channel(channel, _INTERCEPTOR)


def _budgeted_transport(**kwargs: Any) -> SpannerGrpcTransport:
    return _BudgetedTransport(channel=_budgeted_channel, **kwargs)


# The thread-local flag Database.run_in_transaction keeps in `Database._local`
# (google-cloud-spanner 3.71), and ours beside it (see _BudgetedDatabase.run_in_transaction).
_LIBRARY_FLAG = "transaction_running"
_OUTERMOST_TRANSACTION = "entitlements_transaction_running"
# What the library raises when it finds that flag set.
NESTED_TRANSACTION_MESSAGE = "does not support nested transactions"


class _BudgetedDatabase(Database):  # type: ignore[misc]
    """A Database whose data-plane client sends every RPC through _BudgetInterceptor.

    Database builds its SpannerClient lazily in the `spanner_api` property, with no hook
    for interceptors; this builds the same client (the emulator's plain channel, or the
    default transport with the client's scoped credentials and `client_options`) on an
    intercepted channel.
    """

    _budgeted_api: SpannerClient | None = None
    _budgeted_api_lock = threading.Lock()

    def __init__(
        self,
        database_id: str,
        client: spanner.Client,
        instance_id: str,
        *,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        # Read-write transactions use the pool when multiplexed sessions are off for them
        # (against the emulator); a BurstyPool creates sessions on demand.
        pool = BurstyPool()
        super().__init__(database_id, client.instance(instance_id), pool=pool)
        pool.bind(self)  # what Instance.database() does; no RPC for a BurstyPool
        self._budgeted_credentials = client.credentials
        self._budgeted_client_options = client_options

    @property
    def spanner_api(self) -> SpannerClient:
        api = self._budgeted_api
        if api is None:
            with self._budgeted_api_lock:
                api = self._budgeted_api
                if api is None:
                    api = self._budgeted_api = self._build_api()
        return api

    def run_in_transaction(self, func: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Database.run_in_transaction, without its leak of the thread's "transaction
        running" flag. google-cloud-spanner 3.71 (database.py, run_in_transaction) sets
        `self._local.transaction_running` before `get_session()` but clears it in a
        `finally` that covers only what follows, so a failed session checkout (session
        creation during an outage) leaves it set, and every later transaction on that
        thread fails with "Spanner does not support nested transactions."

        Our store calls never nest transactions: a flag found set when an outermost call
        starts here can only be such a leak, and is cleared; and the call clears it when
        it ends, however it ends. A transaction really nested in one of ours (on the
        same thread) is still refused, by the library."""
        local = getattr(self, "_local", None)  # (a later version may keep it elsewhere)
        if local is None or getattr(local, _OUTERMOST_TRANSACTION, False):
            return super().run_in_transaction(func, *args, **kw)
        if getattr(local, _LIBRARY_FLAG, False):
            log.info("cleared a transaction flag leaked by a failed session checkout")
        setattr(local, _LIBRARY_FLAG, False)
        setattr(local, _OUTERMOST_TRANSACTION, True)
        try:
            return super().run_in_transaction(func, *args, **kw)
        finally:
            setattr(local, _LIBRARY_FLAG, False)
            setattr(local, _OUTERMOST_TRANSACTION, False)

    def _build_api(self) -> SpannerClient:
        emulator_host = self._instance.emulator_host
        if emulator_host is not None:
            channel = grpc.intercept_channel(grpc.insecure_channel(emulator_host), _INTERCEPTOR)
            return SpannerClient(transport=_BudgetedTransport(channel=channel))
        credentials = self._budgeted_credentials
        if isinstance(credentials, google.auth.credentials.Scoped):
            credentials = credentials.with_scopes((SPANNER_DATA_SCOPE,))
        return SpannerClient(
            credentials=credentials,
            client_options=self._budgeted_client_options,
            transport=_budgeted_transport,
        )


# -- one handle per process ------------------------------------------------------------------

_handles: dict[tuple[int, str, str | None], Database] = {}
_handles_lock = threading.Lock()
_warned_multiplexed = False


def database_handle(path: DatabasePath, endpoint: str | None = None) -> Database:
    """This process's handle on the database (created on first use, never closed).

    `endpoint` ("host:port", plain text, no credentials) is for emulators and test
    servers; without it the client uses $SPANNER_EMULATOR_HOST when set, else Cloud
    Spanner with the environment's credentials (Application Default Credentials).
    $SPANNER_EMULATOR_HOST takes precedence over `endpoint` (the client library's rule).
    """
    key = (os.getpid(), path.name, endpoint)
    with _handles_lock:
        database = _handles.get(key)
        if database is None:
            _warn_about_emulator_sessions()
            client = new_client(path.project, endpoint)
            database = _BudgetedDatabase(path.database, client, path.instance)
            _handles[key] = database
        return database


def new_client(project: str, endpoint: str | None = None) -> spanner.Client:
    """A Spanner client (no RPC yet): see database_handle for `endpoint`."""
    if endpoint is None:
        return spanner.Client(project=project)
    return spanner.Client(
        project=project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
        disable_builtin_metrics=True,
    )


def _warn_about_emulator_sessions() -> None:
    global _warned_multiplexed
    if _warned_multiplexed or not os.environ.get(EMULATOR_HOST_ENV):
        return
    _warned_multiplexed = True
    if os.environ.get(MULTIPLEXED_RW_ENV, "true").strip().lower() != "false":
        log.warning(
            "%s is set but %s is not 'false': emulator 1.5.28 loses concurrent read-write "
            "transactions on multiplexed sessions ('Transaction not found')",
            EMULATOR_HOST_ENV,
            MULTIPLEXED_RW_ENV,
        )


# -- store calls -----------------------------------------------------------------------------

# Failures meaning "the store cannot serve this now": the caller may retry later.
_UNAVAILABLE = (
    api_exceptions.ServiceUnavailable,
    api_exceptions.DeadlineExceeded,
    api_exceptions.Aborted,  # still contended when the retry budget ran out
    api_exceptions.ResourceExhausted,
    api_exceptions.InternalServerError,
    api_exceptions.Unknown,
    api_exceptions.Cancelled,
    api_exceptions.NotFound,  # database, instance or session
    api_exceptions.PermissionDenied,
    api_exceptions.Unauthenticated,
    api_exceptions.RetryError,
    auth_exceptions.GoogleAuthError,
)


@contextlib.contextmanager
def store_call(path: DatabasePath, what: str, default_timeout: float) -> Iterator[None]:
    """Runs one repository call: within the RPC's budget (raising DeadlineExceeded at once
    if none is left) or, when the RPC set none, within `default_timeout`; and turns the
    Spanner failures that mean "unavailable" into StoreUnavailable, or into
    DeadlineExceeded when the RPC's budget ran out. Other errors (a query the schema
    does not support, a constraint) propagate as they are."""
    rpc_budget = store_seconds_left() is not None
    with contextlib.nullcontext() if rpc_budget else within_store_deadline(default_timeout):
        try:
            yield
        except _UNAVAILABLE as exc:
            if rpc_budget and _budget_spent():
                raise DeadlineExceeded(
                    f"the RPC deadline passed during the Spanner {what}"
                ) from exc
            raise StoreUnavailable(_describe(path, what, exc)) from exc
        except DeadlineExceeded as exc:  # the budget ran out between Spanner RPCs
            if rpc_budget:
                raise
            raise StoreUnavailable(f"spanner {what} did not finish in time") from exc
        except RuntimeError as exc:
            # The library's thread-local transaction flag, should it leak in a way
            # _BudgetedDatabase does not clear: the store is unusable on this thread for
            # now, which is no bug of the caller's.
            if NESTED_TRANSACTION_MESSAGE not in str(exc):
                raise
            raise StoreUnavailable(f"spanner {what} failed: {exc}") from exc


def _describe(path: DatabasePath, what: str, exc: Exception) -> str:
    if isinstance(exc, api_exceptions.NotFound) and "session" not in str(exc).lower():
        return (
            f"spanner database {path.name} not found: create it, then run "
            f"`entitlements migrate --storage {path.url}` ({exc.message})"
        )
    if isinstance(exc, api_exceptions.DeadlineExceeded | api_exceptions.RetryError):
        return f"spanner {what} did not finish in time: {exc}"
    return f"spanner {what} failed: {type(exc).__name__}: {exc}"
