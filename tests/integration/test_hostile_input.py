"""Hostile input against a real `entitlements serve` process: each request gets a
deliberate status and the server stays up (its memory under the barrage is not
asserted: see test_server_survives_a_hostile_barrage)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from entitlements.v1 import entitlement_service_pb2 as es
from service.grpc_api.auth import with_bearer_token
from tests.support.harness import SERVICE_TOKEN, write_test_credentials
from tests.support.processes import ServerProcess, server_process

pytestmark = pytest.mark.subprocess

GET = "/entitlements.v1.EntitlementService/GetEntitlement"
BATCH = "/entitlements.v1.EntitlementService/BatchGetEntitlements"


def raw_call(
    channel: grpc.Channel, method: str, payload: bytes, metadata: Any = None
) -> grpc.StatusCode:
    rpc: Callable[..., Any] = channel.unary_unary(method)
    try:
        rpc(payload, timeout=10, metadata=metadata)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


def get(user_id: str, feature_id: str = "shuffle_play") -> bytes:
    return es.GetEntitlementRequest(user_id=user_id, feature_id=feature_id).SerializeToString()


def batch(size: int) -> bytes:
    queries = [es.EntitlementQuery(user_id=f"u{i}", feature_id="shuffle_play") for i in range(size)]
    return es.BatchGetEntitlementsRequest(queries=queries).SerializeToString()


OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED

CASES: list[tuple[str, str, bytes, Any, grpc.StatusCode]] = [
    ("not protobuf", GET, b"\xff\xff\xff\xff", None, INVALID),
    ("truncated field", GET, b"\x0a\x80", None, INVALID),
    ("invalid UTF-8 in a string", GET, b"\x0a\x02\xc3\x28\x12\x0cshuffle_play", None, INVALID),
    ("NUL in the user id", GET, get("bad\x00user"), None, INVALID),
    ("newline in the user id", GET, get("bad\nuser"), None, INVALID),
    ("escape sequence in the user id", GET, get("\x1b[31mred"), None, INVALID),
    ("right-to-left override in the user id", GET, get("abc\u202edef"), None, INVALID),
    ("unicode user id", GET, get("användare-ü-✓-用户-🎧"), None, OK),
    ("unknown feature with unicode", GET, get("u", "fonctionnalité"), None, INVALID),
    ("user id of 129 characters", GET, get("u" * 129), None, INVALID),
    ("message over the size limit", GET, get("u" * 300_000), None, EXHAUSTED),
    ("metadata over the size limit", GET, get("u"), [("x-junk", "a" * 40_000)], EXHAUSTED),
    ("batch of 101", BATCH, batch(101), None, INVALID),
    ("batch of 5,000", BATCH, batch(5_000), None, INVALID),
    ("batch over the size limit", BATCH, batch(20_000), None, EXHAUSTED),
    ("empty request", GET, b"", None, INVALID),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("hostile")
    credentials = write_test_credentials(folder / "credentials.yaml")
    with server_process(folder / "hostile.db", credentials) as running:
        yield running


@pytest.mark.parametrize(
    ("payload", "method", "metadata", "expected"),
    [(payload, method, metadata, expected) for _, method, payload, metadata, expected in CASES],
    ids=[case[0] for case in CASES],
)
def test_hostile_request_gets_the_right_status(
    server: ServerProcess, payload: bytes, method: str, metadata: Any, expected: grpc.StatusCode
) -> None:
    with with_bearer_token(grpc.insecure_channel(server.target), SERVICE_TOKEN) as channel:
        assert raw_call(channel, method, payload, metadata) is expected


# The barrage's statuses, and that the server stays up and SERVING, are what this test
# guards. It used to assert that the worker's RSS grows by less than 20 MiB too, under a
# non-strict xfail, so it could never fail: the growth is real and not yet diagnosed
# (on the grpc.aio server, measured 72 -> 114 MiB over 600 rounds alone, and 29 MiB over
# 300 rounds on 2026-12-04; single cases repeated 3,000 times showed no steady growth, so
# it is the mix, perhaps the connection resets of the oversize cases). The memory
# assertion is gone until it is diagnosed; issue 19 item 8 records it.
def test_server_survives_a_hostile_barrage(server: ServerProcess) -> None:
    with with_bearer_token(grpc.insecure_channel(server.target), SERVICE_TOKEN) as channel:
        # Requests over the size limits cost ~0.5 s each (the connection is reset), so
        # they are repeated less than the cheap ones.
        cheap = [case for case in CASES if case[4] is not OK and case[4] is not EXHAUSTED]
        costly = [case for case in CASES if case[4] is EXHAUSTED]
        for round_ in range(350):
            for _, method, payload, metadata, expected in cheap + (
                costly if round_ % 50 == 0 else []
            ):
                assert raw_call(channel, method, payload, metadata) is expected
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=5)  # type: ignore[attr-defined]
        assert status.status == health_pb2.HealthCheckResponse.SERVING
    assert server.process.poll() is None
