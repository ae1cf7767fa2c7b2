"""What h2load loads: a unary method of a gRPC server with its request (`Target`), and the
check, with a real gRPC client, that the server answers it OK before any load is sent."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from dataclasses import dataclass


class NotOk(RuntimeError):
    """The server's answer to the request is not gRPC status OK: no load is sent."""


@dataclass(frozen=True)
class Target:
    """A unary method of a gRPC server and the request h2load sends to it."""

    host: str
    port: int
    # "/package.Service/Method" (the leading slash is optional).
    method: str
    # The serialized request message (without the gRPC frame header).
    request: bytes
    # Sent as `authorization: Bearer TOKEN` when set.
    token: str | None = None
    # Other requests, each sent by its own h2load process over its own connections.
    more_requests: tuple[bytes, ...] = ()

    @property
    def requests(self) -> tuple[bytes, ...]:
        return (self.request, *self.more_requests)

    @property
    def path(self) -> str:
        return self.method if self.method.startswith("/") else "/" + self.method

    @property
    def authority(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.authority}{self.path}"

    def headers(self) -> list[str]:
        headers = ["content-type: application/grpc", "te: trailers"]
        if self.token:
            headers.append(f"authorization: Bearer {self.token}")
        return headers

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: uncompressed flag 0, 4-byte big-endian length."""
    return struct.pack(">BI", 0, len(message)) + message


def check_ok(
    target: Target,
    timeout_s: float = 5.0,
    parse: Callable[[bytes], object] | None = None,
) -> bytes:
    """Sends the target's request once with a real gRPC client (raw bytes in and out)
    and returns the serialized response; raises NotOk unless the status is OK (and, with
    `parse`, unless parse(response) succeeds, e.g. `GetEntitlementResponse.FromString`)."""
    import grpc

    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(target.authority, options=options) as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            target.path, request_serializer=None, response_deserializer=None
        )
        try:
            response = call(target.request, timeout=timeout_s, metadata=target.metadata())
        except grpc.RpcError as error:
            if isinstance(error, grpc.Call):
                raise NotOk(
                    f"{target.url}: {error.code().name} ({error.details()}): not loading"
                ) from error
            raise NotOk(f"{target.url}: {error!r}: not loading") from error
    if not isinstance(response, bytes):
        raise NotOk(f"{target.url}: the response is {type(response).__name__}, not bytes")
    if parse is not None:
        try:
            parse(response)
        except Exception as error:
            raise NotOk(f"{target.url}: the response does not parse: {error!r}") from error
    return response


def check_all(
    target: Target,
    timeout_s: float = 5.0,
    parse: Callable[[bytes], object] | None = None,
) -> list[bytes]:
    """`check_ok` for each of the target's requests; their serialized responses."""
    return [
        check_ok(dataclasses.replace(target, request=request, more_requests=()), timeout_s, parse)
        for request in target.requests
    ]
