"""The metadata limit (max_metadata_bytes, 16 KiB by default) is exact: grpc's
`grpc.max_metadata_size` alone is a soft limit, above which calls are refused only with a
probability growing up to the hard limit (1.25 times it by default). Issue 25 measured
16.5 KB refused 6 times of 30. Through a real server on a free loopback port.

grpc counts each header as its name, its value and 32 bytes (HPACK's accounting), the
call's own headers (:path, user-agent, grpc-timeout, ...) included, about 300 bytes here."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import entitlement_service_pb2_grpc as es_grpc
from service.config import Settings
from service.grpc_api.auth import bearer_metadata
from service.grpc_api.server import RunningServer, start_server
from storage.memory import MemoryRepository
from tests.support.harness import SERVICE_TOKEN, write_test_credentials

# Calls per size (a refused call takes ~0.25 s here: the client's reconnect).
CALLS = 12
LIMIT = Settings().max_metadata_bytes
HEADER = "x-padding"
# What grpc adds to every header's name and value in its count.
ENTRY_OVERHEAD = 32
# The call's own headers stay below this (measured ~300 bytes with a bearer token).
CALL_HEADERS_AT_MOST = 1024


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[es_grpc.EntitlementServiceStub]:
    folder = tmp_path_factory.mktemp("metadata")
    settings = Settings(
        host="127.0.0.1",
        port=0,
        credentials_file=write_test_credentials(folder / "credentials.yaml"),
    )
    running: RunningServer = start_server(settings, repository=MemoryRepository())
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield es_grpc.EntitlementServiceStub(channel)
    finally:
        channel.close()
        running.stop(grace_seconds=1)


def codes(
    stub: es_grpc.EntitlementServiceStub,
    padding_bytes: int,
    calls: int = CALLS,
    timeout: float | None = 30,
) -> list[grpc.StatusCode]:
    """The status of `calls` calls whose extra header counts `padding_bytes` in grpc's sum.
    Without a timeout the call sends no grpc-timeout header, whose length varies."""
    value = "p" * (padding_bytes - len(HEADER) - ENTRY_OVERHEAD)
    metadata = (*bearer_metadata(SERVICE_TOKEN), (HEADER, value))
    request = es.GetEntitlementRequest(user_id="metadata-user", feature_id="offline_downloads")
    found = []
    for _ in range(calls):
        try:
            stub.GetEntitlement(request, metadata=metadata, timeout=timeout)
            found.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            if not isinstance(error, grpc.Call):
                raise
            found.append(error.code())
    return found


def test_metadata_just_under_the_limit_is_always_accepted(
    stub: es_grpc.EntitlementServiceStub,
) -> None:
    assert codes(stub, LIMIT - CALL_HEADERS_AT_MOST) == [grpc.StatusCode.OK] * CALLS


@pytest.mark.parametrize("over", [1, 4 * 1024])
def test_metadata_over_the_limit_is_always_refused(
    stub: es_grpc.EntitlementServiceStub, over: int
) -> None:
    """Just over (the header alone) and 20 KiB (grpc's hard limit, when unset)."""
    assert codes(stub, LIMIT + over) == [grpc.StatusCode.RESOURCE_EXHAUSTED] * CALLS


def test_the_limit_is_one_exact_boundary(stub: es_grpc.EntitlementServiceStub) -> None:
    """The largest padding accepted, found by bisection: the call's own headers fill the
    rest of max_metadata_bytes, and one byte more is refused every time. Calls without a
    deadline (pytest-timeout bounds them): their headers do not change from call to call."""
    accepted, refused = LIMIT - CALL_HEADERS_AT_MOST, LIMIT + 1
    while refused - accepted > 1:
        middle = (accepted + refused) // 2
        if codes(stub, middle, calls=1, timeout=None) == [grpc.StatusCode.OK]:
            accepted = middle
        else:
            refused = middle
    call_headers = LIMIT - accepted
    assert 0 < call_headers < CALL_HEADERS_AT_MOST
    assert codes(stub, accepted, timeout=None) == [grpc.StatusCode.OK] * CALLS
    assert codes(stub, refused, timeout=None) == [grpc.StatusCode.RESOURCE_EXHAUSTED] * CALLS
