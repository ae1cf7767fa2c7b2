"""Health, reflection, the write service's UNIMPLEMENTED contract, and read consistency
against a real server."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from entitlements.v1 import common_pb2
from entitlements.v1 import entitlement_service_pb2 as es
from service.domain.account import AccountState, Grant, GrantKind
from service.usecases.tokens import issue_token
from tests.state_writes import write_state
from tests.support.harness import HARNESS_BACKENDS, NOW, Harness

SERVING = health_pb2.HealthCheckResponse.SERVING

pytestmark = pytest.mark.parametrize("harness", HARNESS_BACKENDS, indirect=True)


@pytest.mark.parametrize(
    ("service", "status"),
    [
        ("", SERVING),
        ("entitlements.v1.EntitlementService", SERVING),
        ("entitlements.v1.OfferService", SERVING),
        ("entitlements.v1.SubscriptionEventService", SERVING),
    ],
)
def test_health_per_service(harness: Harness, service: str, status: int) -> None:
    stub = health_pb2_grpc.HealthStub(harness.channel)
    response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)  # type: ignore[attr-defined]  # stubs lack Check
    assert response.status == status


def test_health_of_unknown_service_is_not_found(harness: Harness) -> None:
    stub = health_pb2_grpc.HealthStub(harness.channel)
    with pytest.raises(grpc.RpcError) as raised:
        stub.Check(health_pb2.HealthCheckRequest(service="nope.Service"), timeout=5)  # type: ignore[attr-defined]
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_services(harness: Harness) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(harness.channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="entitlements.v1.OfferService"
        ),
    ]
    listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=5))  # type: ignore[operator]
    names = {s.name for s in listed.list_services_response.service}
    assert {
        "entitlements.v1.EntitlementService",
        "entitlements.v1.OfferService",
        "entitlements.v1.SubscriptionEventService",
        "grpc.health.v1.Health",
    } <= names
    assert described.file_descriptor_response.file_descriptor_proto


def test_token_and_full_consistency_see_a_write_the_cache_has_not(harness: Harness) -> None:
    user_id = "consistency-user"

    def read(consistency: common_pb2.ReadConsistency | None = None) -> bool:
        response = harness.entitlements.GetEntitlement(
            es.GetEntitlementRequest(
                user_id=user_id, feature_id="offline_downloads", consistency=consistency
            ),
            timeout=5,
        )
        return response.entitlement.granted

    assert read() is False  # now cached as a free user

    # A write through another process sharing the store (the write RPCs come later).
    other_process = harness.open_store()
    grant = Grant("g-1", GrantKind.SUPPORT, NOW, feature_id="offline_downloads")

    def add_grant(state: AccountState) -> AccountState:
        return dataclasses.replace(state, grants=(*state.grants, grant))

    written = write_state(other_process, user_id, add_grant)
    other_process.close()

    assert read() is False  # the cache still serves the older state, within its TTL
    token = issue_token(user_id, written.version)
    assert read(common_pb2.ReadConsistency(consistency_token=token)) is True
    assert read() is True  # the cache now holds the newer state
    # A token for another user does not force a reload for this one, and is no error.
    other_token = issue_token("someone-else", 99)
    assert read(common_pb2.ReadConsistency(consistency_token=other_token)) is True


def test_full_consistency_bypasses_the_cache(harness: Harness) -> None:
    user_id = "fresh-user"
    request = es.GetEntitlementRequest(user_id=user_id, feature_id="high_fidelity_audio")
    assert not harness.entitlements.GetEntitlement(request, timeout=5).entitlement.granted
    other_process = harness.open_store()
    grant = Grant("g-2", GrantKind.PROMOTIONAL, NOW, feature_id="high_fidelity_audio")
    write_state(other_process, user_id, lambda s: dataclasses.replace(s, grants=(grant,)))
    other_process.close()
    assert not harness.entitlements.GetEntitlement(request, timeout=5).entitlement.granted
    request.consistency.full_consistency = True
    assert harness.entitlements.GetEntitlement(request, timeout=5).entitlement.granted
