"""The client side: sending a bearer token on the calls of a channel, or of one call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from service.grpc_api.auth.credentials import AUTHORIZATION


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class BearerTokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call of a channel."""

    def __init__(self, token: str) -> None:
        self.metadata: tuple[tuple[str, str], ...] = ((AUTHORIZATION, f"Bearer {token}"),)

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            (*(details.metadata or ()), *self.metadata),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def with_bearer_token(channel: grpc.Channel, token: str) -> grpc.Channel:
    """A channel sending `token` on every call (closing it closes `channel`)."""
    return grpc.intercept_channel(channel, BearerTokenInterceptor(token))


def bearer_metadata(token: str) -> tuple[tuple[str, str]]:
    """Per-call metadata carrying `token`."""
    return ((AUTHORIZATION, f"Bearer {token}"),)
