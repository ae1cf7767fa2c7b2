"""Error mapping: use-case errors become gRPC statuses with google.rpc details
(BadRequest, ErrorInfo, PreconditionFailure); internals never reach the caller."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from service.domain.errors import InvalidRequest, NotFound, PreconditionFailed
from storage.deadline import DeadlineExceeded
from storage.repository import IdempotencyConflict, StoreUnavailable

log = logging.getLogger(__name__)

Handler = TypeVar("Handler", bound=Callable[..., Any])


ERROR_DOMAIN = "entitlements.v1"


def _abort_with_details(
    context: grpc.ServicerContext, code: int, message: str, *details: Message
) -> NoReturn:
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    status = status_pb2.Status(code=code, message=message, details=packed)
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("unreachable")  # abort_with_status raises


def handle_errors(handler: Handler) -> Handler:
    """Maps use-case errors to gRPC statuses with google.rpc details; internals never
    reach the caller."""

    @functools.wraps(handler)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return handler(self, request, context)
        except InvalidRequest as error:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.violations
                ]
            )
            _abort_with_details(context, code_pb2.INVALID_ARGUMENT, str(error), bad_request)
        except PreconditionFailed as error:
            _abort_with_details(
                context,
                code_pb2.FAILED_PRECONDITION,
                str(error),
                error_details_pb2.ErrorInfo(reason=error.reason.name, domain=ERROR_DOMAIN),
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type=error.reason.name,
                            subject=error.subject,
                            description=error.description,
                        )
                    ]
                ),
            )
        except NotFound as error:
            context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        except IdempotencyConflict:
            context.abort(
                grpc.StatusCode.ALREADY_EXISTS,
                "this id was already used for a different request",
            )
        except DeadlineExceeded:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before an answer")
        except StoreUnavailable:
            log.warning("store unavailable in %s", handler.__name__, exc_info=True)
            context.abort(grpc.StatusCode.UNAVAILABLE, "the account store is unavailable")

    return wrapper  # type: ignore[return-value]
