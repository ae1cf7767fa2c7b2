"""Faults the emulator cannot make, injected with the mock server inside google-cloud-spanner:
ABORTED on commit, UNAVAILABLE on a read, a Spanner that answers after the RPC's deadline,
and a Spanner that stays unreachable behind a real gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import google.oauth2.credentials
import grpc
import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import spanner
from grpc_health.v1 import health_pb2, health_pb2_grpc

from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import entitlement_service_pb2_grpc
from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements.v1 import subscription_event_service_pb2_grpc as ev_grpc
from service.config import Settings
from service.domain.account import AccountState, Redemption, Store
from service.domain.deadlines import within_store_deadline
from service.domain.errors import DeadlineExceeded, StoreUnavailable
from service.grpc_api.auth import with_bearer_token
from service.grpc_api.server import start_server
from service.usecases.store_calls import StoreCalls
from storage.repository import HistoryDraft, IdempotencyKey, Mutation
from storage.spanner import (
    APPLY_READ_QUERY,
    LOAD_QUERY,
    SUBSCRIPTION_COLUMNS,
    DatabasePath,
    SpannerRepository,
)
from storage.spanner.client import (
    EMULATOR_HOST_ENV,
    MULTIPLEXED_RW_ENV,
    _BudgetedDatabase,
    store_call,
)
from tests.spanner.mock_server import (
    ABORTED,
    DATABASE,
    UNAVAILABLE,
    MockSpanner,
    Stall,
    query_result,
    start_mock_spanner,
    status,
)
from tests.support.harness import ADMIN_TOKEN, SERVICE_TOKEN, write_test_credentials
from tests.support.polling import eventually

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
# Scheduling slack of a timing assertion on a busy 2-core machine (the stalls last 10 s).
SLACK = 1.0
NO_STATE: list[list[list[object]]] = [
    [] for _ in APPLY_READ_QUERY.columns
]  # a user Spanner has never seen


@pytest.fixture
def mock(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockSpanner]:
    # The client library would prefer an inherited emulator address over the mock's.
    monkeypatch.delenv(EMULATOR_HOST_ENV, raising=False)
    server = start_mock_spanner()
    server.answer_schema_checks()
    try:
        yield server
    finally:
        server.server.stop(0)


def repository(mock: MockSpanner, default_timeout: float = 5.0) -> SpannerRepository:
    return SpannerRepository(DATABASE, endpoint=mock.endpoint, default_timeout=default_timeout)


def redeem(calls: list[AccountState]) -> object:
    redemption = Redemption("trial", "intro", T0, Store.WEB)

    def mutate(state: AccountState) -> Mutation:
        calls.append(state)
        return Mutation(
            dataclasses.replace(state, redemptions=(*state.redemptions, redemption)),
            {"offer_id": "trial"},
            (HistoryDraft("redemption", "trial", T0, "redeemed trial"),),
        )

    return mutate


def test_aborted_commit_is_retried_at_once_and_writes_the_same_rows(mock: MockSpanner) -> None:
    mock.answer(APPLY_READ_QUERY.sql, query_result(APPLY_READ_QUERY, NO_STATE))
    # Spanner says when to retry (RetryInfo); without it the client would wait 2**n s.
    mock.add_error("Commit", status(ABORTED, "injected abort", retry_delay=0.001))
    repo = repository(mock)
    calls: list[AccountState] = []
    started = time.monotonic()
    applied = repo.apply("u1", IdempotencyKey("redeem", "r1", "fp"), redeem(calls), T0)  # type: ignore[arg-type]
    assert time.monotonic() - started < 2
    assert (applied.version, applied.replayed, applied.response) == (
        1,
        False,
        {"offer_id": "trial"},
    )
    # The whole transaction ran twice, each time from the state it read...
    assert calls == [AccountState.new("u1")] * 2
    commits = mock.servicer.requests_of("CommitRequest")
    assert len(commits) == 2
    # ...and both attempts sent the same keyed writes: the retry cannot duplicate a row.
    first, second = ([(type(m._pb).__name__, str(m)) for m in c.mutations] for c in commits)
    assert first == second
    tables = {str(m.insert_or_update.table or m.replace.table) for m in commits[1].mutations}
    assert tables == {"Users", "Redemptions", "ProcessedRequests", "History", "UserChanges"}
    history = next(
        m.insert_or_update for m in commits[1].mutations if m.insert_or_update.table == "History"
    )
    assert list(history.columns[:3]) == ["UserId", "Version", "Seq"]
    assert [list(row)[:3] for row in history.values] == [["u1", "1", "0"]]
    for commit in commits:
        assert commit.request_options.transaction_tag == "apply-redeem"


class Recorder:
    """A StoreCallObserver that keeps what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, BaseException | None]] = []
        self.aborts: list[str] = []

    def store_call(self, operation: str, seconds: float, error: BaseException | None) -> None:
        self.calls.append((operation, error))

    def transaction_aborted(self, backend: str) -> None:
        self.aborts.append(backend)


def test_an_aborted_attempt_is_told_to_the_observer_of_the_store_call(
    mock: MockSpanner,
) -> None:
    """entitlements_spanner_transaction_aborts: the repository reports the abort to the
    observer of the store call it serves (the metrics' StoreMetrics, in a server)."""
    mock.answer(APPLY_READ_QUERY.sql, query_result(APPLY_READ_QUERY, NO_STATE))
    mock.add_error("Commit", status(ABORTED, "injected abort", retry_delay=0.001))
    repo = repository(mock)
    recorder = Recorder()
    calls = StoreCalls(threads=1, observer=recorder)
    key = IdempotencyKey("redeem", "r1", "fp")
    try:
        applied = asyncio.run(calls.call("apply", 5.0, repo.apply, "u1", key, redeem([]), T0))  # type: ignore[arg-type]
    finally:
        calls.close()
    assert applied.version == 1
    assert recorder.aborts == ["spanner"]
    assert [operation for operation, _ in recorder.calls] == ["apply"]


def test_unavailable_read_is_retried(mock: MockSpanner) -> None:
    subscription = [
        "sub-1", "premium", "active", "web", T0, T0 + timedelta(days=30), None, True, None, None,
        None,  # folded_events: a row no fold has written yet
    ]  # fmt: skip
    assert len(subscription) == len(SUBSCRIPTION_COLUMNS)
    # The user row and one subscription; every other column of the load query empty.
    state: list[list[list[object]]] = [
        [[3, "SE", None]],
        [subscription],
        *([] for _ in LOAD_QUERY.columns[2:]),
    ]
    mock.answer(LOAD_QUERY.sql, query_result(LOAD_QUERY, state))
    repo = repository(mock)
    repo.check()  # the schema check, before the fault
    mock.servicer.clear_requests()
    mock.add_error("ExecuteStreamingSql", status(UNAVAILABLE, "injected unavailable"))
    loaded = repo.load("u1")
    assert (loaded.account.version, loaded.account.home_market) == (3, "SE")
    assert [s.subscription_id for s in loaded.account.subscriptions] == ["sub-1"]
    assert loaded.account.subscriptions[0].current_period_end == T0 + timedelta(days=30)
    reads = mock.servicer.requests_of("ExecuteSqlRequest")
    assert len(reads) == 2  # the failed one and its retry
    assert {r.request_options.request_tag for r in reads} == {"load"}
    assert reads[0].transaction.single_use.read_only.strong  # a strong read by default


def test_stale_read_too_old_for_the_token_falls_back_to_a_strong_read(mock: MockSpanner) -> None:
    state = [[[3, None, None]], *([] for _ in LOAD_QUERY.columns[1:])]
    mock.answer(LOAD_QUERY.sql, query_result(LOAD_QUERY, state))
    repo = repository(mock)
    repo.check()
    mock.servicer.clear_requests()
    assert repo.load("u1", min_version=3).account.version == 3
    assert repo.load("u1", min_version=4).account.version == 3
    reads = mock.servicer.requests_of("ExecuteSqlRequest")
    kinds = [
        ("stale" if r.transaction.single_use.read_only.max_staleness else "strong") for r in reads
    ]
    assert kinds == ["stale", "stale", "strong"]
    assert reads[0].transaction.single_use.read_only.max_staleness == timedelta(seconds=10)
    assert [r.request_options.request_tag for r in reads] == ["load-stale", "load-stale", "load"]


@pytest.mark.parametrize("method", ["Commit", "ExecuteStreamingSql"])
def test_store_call_outliving_the_rpc_deadline_ends_in_deadline_exceeded(
    mock: MockSpanner, method: str
) -> None:
    mock.answer(APPLY_READ_QUERY.sql, query_result(APPLY_READ_QUERY, NO_STATE))
    repo = repository(mock)
    repo.check()
    stall = mock.servicer.stalls[method] = Stall(seconds=10)
    budget = 0.3
    started = time.monotonic()
    with within_store_deadline(budget), pytest.raises(DeadlineExceeded):
        repo.apply("u1", IdempotencyKey("grant", "g1", "fp"), redeem([]), T0)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    assert elapsed < budget + SLACK, elapsed
    # Spanner got the RPC's remaining budget as the call's deadline, and saw the call
    # cancelled when it passed: no store work goes on after the RPC ended.
    assert stall.done.wait(2)
    # (gRPC rounds a deadline up when it sends it.)
    assert stall.deadlines[0] is not None
    assert stall.deadlines[0] <= budget + 0.05
    assert stall.cancelled == [True]
    assert mock.servicer.requests_of("CommitRequest") == []


def test_without_an_rpc_deadline_the_default_timeout_bounds_a_call(mock: MockSpanner) -> None:
    mock.answer(LOAD_QUERY.sql, query_result(LOAD_QUERY, [[] for _ in LOAD_QUERY.columns]))
    repo = repository(mock, default_timeout=0.3)
    repo.check()
    stall = mock.servicer.stalls["ExecuteStreamingSql"] = Stall(seconds=10)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="did not finish in time"):
        repo.load("u1")
    assert time.monotonic() - started < 0.3 + SLACK
    assert stall.done.wait(2)
    assert stall.cancelled == [True]


def test_an_expired_budget_sends_nothing(mock: MockSpanner) -> None:
    repo = repository(mock)
    repo.check()
    mock.servicer.clear_requests()
    with within_store_deadline(0.0), pytest.raises(DeadlineExceeded):
        repo.load("u1")
    assert mock.servicer.requests == []


def test_the_service_answers_unavailable_while_spanner_is(
    mock: MockSpanner, tmp_path: Path
) -> None:
    settings = Settings(
        host="127.0.0.1",
        port=0,
        storage_url=f"spanner://{DATABASE}",
        credentials_file=write_test_credentials(tmp_path / "credentials.yaml"),
        readiness_interval_seconds=0.1,
        store_timeout_seconds=0.2,
        write_timeout_seconds=0.3,
    )
    running = start_server(settings, repository=repository(mock, default_timeout=0.3))
    target = f"127.0.0.1:{running.port}"
    reader = with_bearer_token(grpc.insecure_channel(target), SERVICE_TOKEN)
    writer = with_bearer_token(grpc.insecure_channel(target), ADMIN_TOKEN)
    try:
        running.repository.check()  # schema checked while Spanner still answers
        mock.servicer.fail_queries = True
        stub = entitlement_service_pb2_grpc.EntitlementServiceStub(reader)
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetEntitlement(
                es.GetEntitlementRequest(user_id="u1", feature_id="offline_downloads"), timeout=5
            )
        assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as raised:
            ev_grpc.SubscriptionEventServiceStub(writer).GrantEntitlement(
                ev.GrantEntitlementRequest(
                    request_id="g-1",
                    user_id="u1",
                    grant=ev.Grant(kind=ev.GRANT_KIND_SUPPORT, feature_id="offline_downloads"),
                ),
                timeout=5,
            )
        assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
        # Readiness follows the store.
        health = health_pb2_grpc.HealthStub(reader)

        def not_serving() -> bool:
            request = health_pb2.HealthCheckRequest(service="")
            status = health.Check(request, timeout=5).status  # type: ignore[attr-defined]
            return bool(status == health_pb2.HealthCheckResponse.NOT_SERVING)

        eventually(not_serving, 5, 0.05)
    finally:
        reader.close()
        writer.close()
        running.stop(grace_seconds=0)


def test_a_caller_deadline_bounds_the_spanner_call_behind_the_server(
    mock: MockSpanner, tmp_path: Path
) -> None:
    settings = Settings(
        host="127.0.0.1",
        port=0,
        storage_url=f"spanner://{DATABASE}",
        credentials_file=write_test_credentials(tmp_path / "credentials.yaml"),
        store_timeout_seconds=5,  # the caller's deadline is the tighter bound
    )
    running = start_server(settings, repository=repository(mock))
    reader = with_bearer_token(grpc.insecure_channel(f"127.0.0.1:{running.port}"), SERVICE_TOKEN)
    try:
        running.repository.check()
        stall = mock.servicer.stalls["ExecuteStreamingSql"] = Stall(seconds=10)
        stub = entitlement_service_pb2_grpc.EntitlementServiceStub(reader)
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetEntitlement(
                es.GetEntitlementRequest(user_id="u1", feature_id="offline_downloads"),
                timeout=0.4,
            )
        assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        # Spanner was asked to finish within the caller's deadline and saw the call end.
        assert stall.done.wait(2)
        assert stall.deadlines[0] is not None
        assert stall.deadlines[0] <= 0.45
        assert stall.cancelled == [True]
    finally:
        reader.close()
        running.stop(grace_seconds=0)


def test_the_production_transport_carries_the_budget_too() -> None:
    """Cloud Spanner's path (TLS channel, OAuth credentials) gets the same deadline on
    every RPC: here against a loopback port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    endpoint = f"127.0.0.1:{listener.getsockname()[1]}"
    client = spanner.Client(
        project="p",
        credentials=google.oauth2.credentials.Credentials(token="not-a-real-token"),
        disable_builtin_metrics=True,
    )
    database = _BudgetedDatabase("d", client, "i", client_options={"api_endpoint": endpoint})
    try:
        started = time.monotonic()
        with (
            within_store_deadline(0.3),
            pytest.raises(api_exceptions.DeadlineExceeded),
            database.snapshot() as snapshot,
        ):
            list(snapshot.execute_sql("SELECT 1"))
        assert time.monotonic() - started < 1.5
        assert held  # it did try the endpoint given
    finally:
        listener.close()
        for connection in held:
            connection.close()


def test_session_creation_retries_end_within_the_budget(mock: MockSpanner) -> None:
    """The client retries a refused CreateSession for 30 s by default, each attempt
    failing at once, so no per-attempt deadline stops it: the budget bounds the whole."""
    mock.servicer.fail_sessions = UNAVAILABLE
    repo = repository(mock, default_timeout=0.5)
    for budget in (None, 0.5):  # the repository's default, then an RPC's
        started = time.monotonic()
        # (Unavailable when the client stopped retrying short of the RPC's deadline.)
        with within_store_deadline(budget), pytest.raises((StoreUnavailable, DeadlineExceeded)):
            repo.load("u1")
        assert time.monotonic() - started < 0.5 + SLACK
    assert mock.servicer.requests_of("CreateSessionRequest")  # it did try


def test_a_failed_session_checkout_leaves_the_thread_able_to_write(
    mock: MockSpanner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """google-cloud-spanner 3.71 marks the thread as running a transaction before it
    checks out a session, outside its try/finally: without the guard, every later write
    on this thread failed with "Spanner does not support nested transactions"."""
    monkeypatch.setenv(MULTIPLEXED_RW_ENV, "false")  # a session of the pool per write
    mock.answer(APPLY_READ_QUERY.sql, query_result(APPLY_READ_QUERY, NO_STATE))
    repo = repository(mock)
    repo.check()
    mock.servicer.fail_sessions = UNAVAILABLE
    with within_store_deadline(0.3), pytest.raises((StoreUnavailable, DeadlineExceeded)):
        repo.apply("u1", IdempotencyKey("redeem", "r1", "fp"), redeem([]), T0)  # type: ignore[arg-type]
    assert mock.servicer.requests_of("CreateSessionRequest")  # it failed there
    mock.servicer.fail_sessions = None
    # The same thread: its next transactions run.
    for request_id in ("r1", "r2"):
        applied = repo.apply("u1", IdempotencyKey("redeem", request_id, "fp"), redeem([]), T0)  # type: ignore[arg-type]
        assert not applied.replayed


def test_a_nested_transaction_error_is_unavailable() -> None:
    """Should the library's flag still leak some other way, the call is UNAVAILABLE
    (retry later), not a bug of the caller's (UNKNOWN)."""
    path = DatabasePath.parse(DATABASE)
    with (
        pytest.raises(StoreUnavailable, match="nested transactions"),
        store_call(path, "update", 1.0),
    ):
        raise RuntimeError("Spanner does not support nested transactions.")
    with pytest.raises(RuntimeError, match="something else"), store_call(path, "update", 1.0):
        raise RuntimeError("something else")


def test_a_restarted_query_backs_off_instead_of_spinning(mock: MockSpanner) -> None:
    """The library restarts a streaming query after UNAVAILABLE at once and without
    limit; against a refused connection that spun a store thread for its whole budget."""
    repo = repository(mock)
    repo.check()
    mock.servicer.clear_requests()
    mock.servicer.fail_queries = True
    started = time.monotonic()
    with within_store_deadline(1.0), pytest.raises(DeadlineExceeded):
        repo.load("u1")
    assert time.monotonic() - started < 1.0 + SLACK
    sent = len(mock.servicer.requests_of("ExecuteSqlRequest"))
    assert 2 <= sent <= 12, sent  # a doubling backoff from 10 ms, capped at 250 ms
