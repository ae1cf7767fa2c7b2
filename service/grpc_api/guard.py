"""The request guard: every unary RPC of our services gets a deadline budget, and a
request that is not valid protobuf is answered INVALID_ARGUMENT (grpcio would answer
INTERNAL, blaming the server for the caller's bytes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from service.grpc_api.handler_cache import HandlerCache
from service.usecases.deadlines import rpc_deadline_in

GUARDED_PACKAGE = "/entitlements.v1."


class _Malformed:
    """Stands in for a request whose bytes did not parse."""


MALFORMED = _Malformed()


class RequestGuard(grpc.ServerInterceptor):
    def __init__(self, max_rpc_seconds: float) -> None:
        self._max_rpc_seconds = max_rpc_seconds
        self._handlers = HandlerCache(self._wrap)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or not method.startswith(GUARDED_PACKAGE):
            return handler
        return self._handlers.wrapped(method, handler)

    def _wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        assert handler.unary_unary is not None  # intercept_service wraps only unary calls
        return grpc.unary_unary_rpc_method_handler(
            self._guarded(handler.unary_unary),
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _guarded(
        self, inner: Callable[[Any, grpc.ServicerContext], Any]
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        cap = self._max_rpc_seconds

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            if request is MALFORMED:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid protobuf message"
                )
            remaining = context.time_remaining()
            budget = cap if remaining is None else min(cap, remaining)
            with rpc_deadline_in(budget):
                return inner(request, context)

        return guarded


def _tolerant(
    deserializer: Callable[[bytes], Any] | None,
) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, ValueError, UnicodeDecodeError):
            return MALFORMED

    return deserialize
