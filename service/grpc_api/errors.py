"""Error mapping: use-case errors become gRPC statuses with google.rpc details
(BadRequest, ErrorInfo, PreconditionFailure); internals never reach the caller."""

from __future__ import annotations

import logging
import threading
import time

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from service.domain.errors import InvalidRequest, NotFound, PreconditionFailed
from service.usecases.watch import TooManyWatches, WatchClosed
from storage.deadline import DeadlineExceeded
from storage.repository import IdempotencyConflict, StoreUnavailable

log = logging.getLogger(__name__)

ERROR_DOMAIN = "entitlements.v1"
# Error details travel in trailers, which clients cap (grpc's default soft limit is
# 8 KiB): a BadRequest lists at most this many violations (the message counts the rest).
MAX_REPORTED_VIOLATIONS = 10
# RPCs failing because the store is unavailable log one line (no traceback) per interval
# at most, counting the others: the readiness check logs the cause when an outage starts
# and ends, and entitlements_store_errors_total counts every failure.
STORE_FAILURE_LOG_INTERVAL_SECONDS = 10.0


class _EveryInterval:
    """Admits one event per interval; counts those it refuses."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._next = 0.0
        self._suppressed = 0
        self._lock = threading.Lock()

    def admit(self) -> int | None:
        """None: refused (counted); else the count refused since the last admitted one."""
        with self._lock:
            now = time.monotonic()
            if now < self._next:
                self._suppressed += 1
                return None
            self._next = now + self._seconds
            suppressed, self._suppressed = self._suppressed, 0
            return suppressed


_store_failures = _EveryInterval(STORE_FAILURE_LOG_INTERVAL_SECONDS)


class ErrorStatus(grpc.Status):
    """A status to end a call with: code, details and trailing metadata (where the
    google.rpc.Status with its details travels)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        trailing_metadata: tuple[tuple[str, str | bytes], ...] = (),
    ) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def _with_details(code: int, message: str, *details: Message) -> ErrorStatus:
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    status = rpc_status.to_status(status_pb2.Status(code=code, message=message, details=packed))
    return ErrorStatus(status.code, status.details, tuple(status.trailing_metadata))


def status_for(error: Exception) -> ErrorStatus | None:
    """The status a use-case error is answered with; None for an unexpected error (a bug,
    answered by the caller of this function without revealing anything)."""
    if isinstance(error, InvalidRequest):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations[:MAX_REPORTED_VIOLATIONS]
            ]
        )
        return _with_details(code_pb2.INVALID_ARGUMENT, str(error), bad_request)
    if isinstance(error, PreconditionFailed):
        reason = error.reason.name
        return _with_details(
            code_pb2.FAILED_PRECONDITION,
            str(error),
            error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN),
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=reason, subject=error.subject, description=error.description
                    )
                ]
            ),
        )
    if isinstance(error, TooManyWatches):
        return ErrorStatus(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
    if isinstance(error, WatchClosed):
        return ErrorStatus(grpc.StatusCode.UNAVAILABLE, str(error))
    if isinstance(error, NotFound):
        return ErrorStatus(grpc.StatusCode.NOT_FOUND, str(error))
    if isinstance(error, IdempotencyConflict):
        return ErrorStatus(
            grpc.StatusCode.ALREADY_EXISTS, "this id was already used for a different request"
        )
    if isinstance(error, DeadlineExceeded):
        return ErrorStatus(
            grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before an answer"
        )
    if isinstance(error, StoreUnavailable):
        suppressed = _store_failures.admit()
        if suppressed is not None:
            log.warning(
                "store unavailable: %s (%d more such RPC failures not logged in the last %g s)",
                error,
                suppressed,
                STORE_FAILURE_LOG_INTERVAL_SECONDS,
            )
        return ErrorStatus(grpc.StatusCode.UNAVAILABLE, "the account store is unavailable")
    return None
