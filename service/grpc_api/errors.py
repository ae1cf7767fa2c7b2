"""Error mapping: each kind of error of the service (service.domain.errors) becomes a
gRPC status, with google.rpc details (BadRequest, ErrorInfo, PreconditionFailure) where
the kind has them; internals never reach the caller (each error's public message)."""

from __future__ import annotations

import logging
import threading
import time

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from service.domain.errors import ErrorKind, InvalidRequest, PreconditionFailed, ServiceError

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


# The status of each kind of error (service.domain.errors draws the tree).
STATUS_OF_KIND: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.ID_REUSED: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.STORE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.SHUTTING_DOWN: grpc.StatusCode.UNAVAILABLE,
}


def status_for(error: Exception) -> ErrorStatus | None:
    """The status an error of the service is answered with; None for any other error (a
    bug, answered by the caller of this function without revealing anything)."""
    if not isinstance(error, ServiceError):
        return None
    code = STATUS_OF_KIND[error.kind]
    if error.kind is ErrorKind.STORE_UNAVAILABLE:
        _log_store_failure(error)
    details = _details_of(error)
    if not details:
        return ErrorStatus(code, error.public_message)
    return _with_details(code.value[0], error.public_message, *details)


def _details_of(error: ServiceError) -> tuple[Message, ...]:
    """The google.rpc details of the errors that carry some."""
    if isinstance(error, InvalidRequest):
        field_violations = [
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations[:MAX_REPORTED_VIOLATIONS]
        ]
        return (error_details_pb2.BadRequest(field_violations=field_violations),)
    if isinstance(error, PreconditionFailed):
        reason = error.reason.name
        violation = error_details_pb2.PreconditionFailure.Violation(
            type=reason, subject=error.subject, description=error.description
        )
        return (
            error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN),
            error_details_pb2.PreconditionFailure(violations=[violation]),
        )
    return ()


def _log_store_failure(error: ServiceError) -> None:
    """One line per interval at most (see STORE_FAILURE_LOG_INTERVAL_SECONDS)."""
    suppressed = _store_failures.admit()
    if suppressed is not None:
        log.warning(
            "store unavailable: %s (%d more such RPC failures not logged in the last %g s)",
            error,
            suppressed,
            STORE_FAILURE_LOG_INTERVAL_SECONDS,
        )
