"""The gRPC service config shipped to client teams (service/service_config.py, as JSON in
clients/service_config.json): it covers every RPC of the API, and its retry policy is in
force on the channels the config's options make, including the `entitlements` CLI's.

The retry tests run a real gRPC server on a loopback port whose servicer answers the first
attempt(s) UNAVAILABLE and counts the attempts it sees."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import FileDescriptor

import entitlements.v1
from entitlements.v1 import (
    entitlement_service_pb2,
    entitlement_service_pb2_grpc,
    subscription_event_service_pb2,
    subscription_event_service_pb2_grpc,
)
from service.service_config import (
    PACKAGE,
    READS,
    SERVICE_CONFIG,
    STREAMS,
    WRITES,
    channel_options,
    service_config_json,
)
from tests.support.processes import ENTITLEMENTS

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "clients" / "service_config.json"


def api_files() -> list[FileDescriptor]:
    modules = [
        importlib.import_module(f"entitlements.v1.{info.name}")
        for info in pkgutil.iter_modules(entitlements.v1.__path__)
        if info.name.endswith("_pb2")
    ]
    return [module.DESCRIPTOR for module in modules]


def test_the_shipped_json_is_the_config() -> None:
    assert json.loads(SHIPPED.read_text()) == SERVICE_CONFIG, (
        "clients/service_config.json differs from service/service_config.py: run "
        "`.venv/bin/python -m service.service_config > clients/service_config.json`"
    )
    assert SHIPPED.read_text() == service_config_json()


def test_every_rpc_of_the_api_has_a_decided_policy() -> None:
    """A new RPC fails this until someone decides whether clients may retry it."""
    unary, streams = set(), set()
    for file in api_files():
        for service in file.services_by_name.values():
            for method in service.methods:
                name = (service.name, method.name)
                if method.server_streaming or method.client_streaming:
                    streams.add(name)
                else:
                    unary.add(name)
    assert unary == set(READS) | set(WRITES), "add each new unary RPC to READS or WRITES"
    assert streams == set(STREAMS), "add each new streaming RPC to STREAMS"
    assert {service for service, _ in WRITES} == {"SubscriptionEventService"}
    named = [name for entry in SERVICE_CONFIG["methodConfig"] for name in entry["name"]]
    assert len(named) == len({(n["service"], n["method"]) for n in named}), "named twice"
    assert all(n["service"].startswith(f"{PACKAGE}.") for n in named)


def test_streams_get_no_default_deadline() -> None:
    (stream_entry,) = [
        entry
        for entry in SERVICE_CONFIG["methodConfig"]
        if entry["name"][0]["method"] == STREAMS[0][1]
    ]
    assert "timeout" not in stream_entry


class FlakyServicer:
    """Answers the first `failures` attempts with `code`, then succeeds (GetEntitlement and
    GrantEntitlement only: the test server registers no other method)."""

    def __init__(self) -> None:
        self.failures = 1
        self.code = grpc.StatusCode.UNAVAILABLE
        self.attempts: list[str] = []
        self._lock = threading.Lock()

    def _attempt(self, context: grpc.ServicerContext, label: str) -> None:
        with self._lock:
            self.attempts.append(label)
            failing = len(self.attempts) <= self.failures
        if failing:
            context.abort(self.code, "made to fail by the test")

    def GetEntitlement(
        self,
        request: entitlement_service_pb2.GetEntitlementRequest,
        context: grpc.ServicerContext,
    ) -> entitlement_service_pb2.GetEntitlementResponse:
        self._attempt(context, request.user_id)
        return entitlement_service_pb2.GetEntitlementResponse(
            entitlement=entitlement_service_pb2.Entitlement(
                user_id=request.user_id,
                feature_id=request.feature_id,
                granted=True,
                plan_id="premium_individual",
            ),
            catalog_version="flaky-test",
        )

    def GrantEntitlement(
        self,
        request: subscription_event_service_pb2.GrantEntitlementRequest,
        context: grpc.ServicerContext,
    ) -> subscription_event_service_pb2.GrantEntitlementResponse:
        self._attempt(context, request.request_id)
        return subscription_event_service_pb2.GrantEntitlementResponse(consistency_token="t1")


@pytest.fixture
def flaky() -> Iterator[tuple[FlakyServicer, str]]:
    servicer = FlakyServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                f"{PACKAGE}.EntitlementService",
                {
                    "GetEntitlement": grpc.unary_unary_rpc_method_handler(
                        servicer.GetEntitlement,
                        entitlement_service_pb2.GetEntitlementRequest.FromString,
                        entitlement_service_pb2.GetEntitlementResponse.SerializeToString,
                    )
                },
            ),
            grpc.method_handlers_generic_handler(
                f"{PACKAGE}.SubscriptionEventService",
                {
                    "GrantEntitlement": grpc.unary_unary_rpc_method_handler(
                        servicer.GrantEntitlement,
                        subscription_event_service_pb2.GrantEntitlementRequest.FromString,
                        subscription_event_service_pb2.GrantEntitlementResponse.SerializeToString,
                    )
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def get_entitlement(channel: grpc.Channel) -> entitlement_service_pb2.GetEntitlementResponse:
    stub = entitlement_service_pb2_grpc.EntitlementServiceStub(channel)
    request = entitlement_service_pb2.GetEntitlementRequest(
        user_id="u1", feature_id="offline_downloads"
    )
    return stub.GetEntitlement(request, timeout=10)


def test_a_read_refused_unavailable_is_retried(flaky: tuple[FlakyServicer, str]) -> None:
    servicer, target = flaky
    servicer.failures = 2
    with grpc.insecure_channel(target, options=channel_options()) as channel:
        assert get_entitlement(channel).entitlement.granted
    assert servicer.attempts == ["u1", "u1", "u1"]


def test_without_the_config_the_same_call_fails(flaky: tuple[FlakyServicer, str]) -> None:
    servicer, target = flaky
    with (
        grpc.insecure_channel(target, options=[("grpc.enable_retries", 1)]) as channel,
        pytest.raises(grpc.RpcError) as raised,
    ):
        get_entitlement(channel)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert servicer.attempts == ["u1"]


def test_resource_exhausted_is_retried_and_invalid_argument_is_not(
    flaky: tuple[FlakyServicer, str],
) -> None:
    servicer, target = flaky
    servicer.code = grpc.StatusCode.RESOURCE_EXHAUSTED
    with grpc.insecure_channel(target, options=channel_options()) as channel:
        assert get_entitlement(channel).entitlement.granted
        assert len(servicer.attempts) == 2
        servicer.attempts.clear()
        servicer.code = grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as raised:
            get_entitlement(channel)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert len(servicer.attempts) == 1


def test_a_write_is_retried_with_the_same_request_id(flaky: tuple[FlakyServicer, str]) -> None:
    servicer, target = flaky
    with grpc.insecure_channel(target, options=channel_options()) as channel:
        stub = subscription_event_service_pb2_grpc.SubscriptionEventServiceStub(channel)
        request = subscription_event_service_pb2.GrantEntitlementRequest(
            request_id="grant-req-1", user_id="u1"
        )
        assert stub.GrantEntitlement(request, timeout=10).consistency_token == "t1"
    assert servicer.attempts == ["grant-req-1", "grant-req-1"]


@pytest.mark.subprocess
def test_the_cli_retries_by_the_config(flaky: tuple[FlakyServicer, str], tmp_path: Path) -> None:
    """The real console script against the flaky server: one UNAVAILABLE, then the answer."""
    servicer, target = flaky
    result = subprocess.run(
        [
            ENTITLEMENTS,
            "get-entitlement",
            "--target",
            target,
            "--credential",
            "any-token",
            "u1",
            "offline_downloads",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "flaky-test" in result.stdout
    assert servicer.attempts == ["u1", "u1"]


@pytest.fixture
def two_servers() -> Iterator[tuple[list[FlakyServicer], str]]:
    """Two servers, as two pods behind the headless Service, and a target that resolves to
    both (what DNS answers for it)."""
    servicers, servers, ports = [], [], []
    for _ in range(2):
        servicer = FlakyServicer()
        servicer.failures = 0
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    f"{PACKAGE}.EntitlementService",
                    {
                        "GetEntitlement": grpc.unary_unary_rpc_method_handler(
                            servicer.GetEntitlement,
                            entitlement_service_pb2.GetEntitlementRequest.FromString,
                            entitlement_service_pb2.GetEntitlementResponse.SerializeToString,
                        )
                    },
                ),
            )
        )
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        server.start()
        servicers.append(servicer)
        servers.append(server)
    try:
        yield servicers, "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
    finally:
        for server in servers:
            server.stop(grace=None)


BALANCED_CALLS = 20


def test_the_config_balances_every_rpc_over_the_resolved_servers(
    two_servers: tuple[list[FlakyServicer], str],
) -> None:
    """round_robin: one channel's calls alternate over the addresses (the pods of the
    headless Service), where gRPC's default, pick_first, sends them all to one."""
    assert SERVICE_CONFIG["loadBalancingConfig"] == [{"round_robin": {}}]
    servicers, target = two_servers
    with grpc.insecure_channel(target, options=channel_options()) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        for _ in range(BALANCED_CALLS):
            assert get_entitlement(channel).entitlement.granted
    counts = [len(servicer.attempts) for servicer in servicers]
    assert sum(counts) == BALANCED_CALLS
    assert min(counts) >= BALANCED_CALLS // 4, counts


def test_without_the_config_one_server_takes_every_call(
    two_servers: tuple[list[FlakyServicer], str],
) -> None:
    servicers, target = two_servers
    with grpc.insecure_channel(target) as channel:
        for _ in range(BALANCED_CALLS):
            assert get_entitlement(channel).entitlement.granted
    assert sorted(len(servicer.attempts) for servicer in servicers) == [0, BALANCED_CALLS]
