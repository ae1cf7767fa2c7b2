"""The one error tree (service.domain.errors) and its table of statuses
(service.grpc_api.errors), and the one deadline module (service.domain.deadlines)."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from service.domain import errors
from service.domain.deadlines import (
    ANSWER_RESERVE_SECONDS,
    rpc_seconds_left,
    store_budget,
    store_seconds_left,
    within_rpc_deadline,
    within_store_deadline,
)
from service.domain.errors import (
    DeadlineExceeded,
    DomainError,
    ErrorKind,
    FieldViolation,
    IdempotencyConflict,
    InvalidRequest,
    PreconditionFailed,
    PreconditionReason,
    ServiceError,
    StoreError,
    StoreUnavailable,
    TooManyWatches,
    Unavailable,
    WatchClosed,
)
from service.grpc_api.errors import STATUS_OF_KIND, status_for


def _leaves() -> list[type[ServiceError]]:
    found = []
    pending: list[type[ServiceError]] = [ServiceError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if hasattr(cls, "kind"):
            found.append(cls)
    return found


def test_every_kind_has_a_status_and_every_error_a_kind() -> None:
    assert set(STATUS_OF_KIND) == set(ErrorKind)
    kinds = {cls.kind for cls in _leaves()}
    assert kinds == set(ErrorKind)
    # Every error class of the module is in the tree (nothing defined beside it).
    module_errors = {
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, Exception)
    }
    assert all(issubclass(cls, ServiceError) for cls in module_errors)


def test_only_the_callers_errors_are_domain_errors() -> None:
    # A server shutting down, or a full server, is not the caller's to fix.
    assert not issubclass(WatchClosed, DomainError)
    assert not issubclass(TooManyWatches, DomainError)
    assert issubclass(WatchClosed, Unavailable)
    assert issubclass(IdempotencyConflict, DomainError)
    # Start-up catches StoreError: every store failure is one.
    assert issubclass(StoreUnavailable, StoreError)


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (WatchClosed("the server is shutting down"), grpc.StatusCode.UNAVAILABLE, None),
        (TooManyWatches("full"), grpc.StatusCode.RESOURCE_EXHAUSTED, None),
        (errors.NotFound("no grant g-1"), grpc.StatusCode.NOT_FOUND, None),
        (
            IdempotencyConflict("key k of kind grant"),
            grpc.StatusCode.ALREADY_EXISTS,
            "this id was already used for a different request",
        ),
        (
            DeadlineExceeded("store call"),
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "the deadline passed before an answer",
        ),
        (
            StoreUnavailable("sqlite: disk I/O error at /secret/path"),
            grpc.StatusCode.UNAVAILABLE,
            "the account store is unavailable",
        ),
    ],
)
def test_status_of_each_kind(error: ServiceError, code: grpc.StatusCode, message: str) -> None:
    status = status_for(error)
    assert status is not None
    assert status.code is code
    assert status.details == (message or str(error))


def test_details_travel_with_invalid_requests_and_failed_preconditions() -> None:
    invalid = status_for(InvalidRequest([FieldViolation("user_id", "must be set")]))
    assert invalid is not None
    assert invalid.code is grpc.StatusCode.INVALID_ARGUMENT
    detail = _first_detail(invalid.trailing_metadata)
    bad_request = error_details_pb2.BadRequest()
    assert detail.Unpack(bad_request)
    assert bad_request.field_violations[0].field == "user_id"

    failed = status_for(
        PreconditionFailed(PreconditionReason.HOUSEHOLD_FULL, "household h", "no seat left")
    )
    assert failed is not None
    assert failed.code is grpc.StatusCode.FAILED_PRECONDITION
    info = error_details_pb2.ErrorInfo()
    assert _first_detail(failed.trailing_metadata).Unpack(info)
    assert info.reason == "HOUSEHOLD_FULL"


def _first_detail(trailing: tuple[tuple[str, str | bytes], ...]) -> any_pb2.Any:
    """The first google.rpc detail, as a client decodes it from the trailers."""
    raw = dict(trailing)["grpc-status-details-bin"]
    assert isinstance(raw, bytes)
    detail: any_pb2.Any = status_pb2.Status.FromString(raw).details[0]
    return detail


def test_anything_else_is_a_bug() -> None:
    assert status_for(ValueError("boom")) is None


def test_rpc_time_left_goes_negative_and_the_store_refuses_to_start() -> None:
    assert rpc_seconds_left() is None
    assert store_seconds_left() is None
    with within_rpc_deadline(0.0):
        time.sleep(0.001)
        left = rpc_seconds_left()
        assert left is not None
        assert left < 0
        # No time for a store call at all.
        with pytest.raises(DeadlineExceeded), store_budget(1.0):
            pass
    with within_store_deadline(0.0), pytest.raises(DeadlineExceeded):
        store_seconds_left()


def test_store_budget_is_the_smaller_of_store_timeout_and_rpc_time() -> None:
    with store_budget(0.5) as budget:
        assert budget.seconds == 0.5
        assert not budget.bound_by_rpc
    with within_rpc_deadline(10.0), store_budget(0.5) as budget:
        assert budget.seconds == 0.5
        assert not budget.bound_by_rpc
        left = store_seconds_left()
        assert left is not None
        assert 0 < left <= 0.5
    with within_rpc_deadline(0.2), store_budget(0.5) as budget:
        assert budget.bound_by_rpc
        assert budget.seconds is not None
        assert budget.seconds <= 0.2 - ANSWER_RESERVE_SECONDS
    # No store timeout: the RPC's time alone (none outside an RPC).
    with store_budget(None) as budget:
        assert budget.seconds is None
        assert store_seconds_left() is None
