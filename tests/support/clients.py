"""Clients of a running server: the event service with the admin token, a grant request,
a read to poll, and one connection held by each worker of `serve --workers N`."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from benchmarks.load import balance
from entitlements.v1 import entitlement_service_pb2, entitlement_service_pb2_grpc
from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements.v1 import subscription_event_service_pb2_grpc as ev_grpc
from service.grpc_api.auth import with_bearer_token
from tests.support.harness import ADMIN_TOKEN, SERVICE_TOKEN


def writer(target: str) -> ev_grpc.SubscriptionEventServiceStub:
    channel = with_bearer_token(grpc.insecure_channel(target), ADMIN_TOKEN)
    return ev_grpc.SubscriptionEventServiceStub(channel)


def grant_request(user_id: str, request_id: str) -> ev.GrantEntitlementRequest:
    return ev.GrantEntitlementRequest(
        request_id=request_id,
        user_id=user_id,
        grant=ev.Grant(kind=ev.GRANT_KIND_SUPPORT, feature_id="offline_downloads"),
    )


def granted(target: str, user_id: str, feature_id: str = "offline_downloads") -> Callable[[], bool]:
    channel = with_bearer_token(grpc.insecure_channel(target), SERVICE_TOKEN)
    stub = entitlement_service_pb2_grpc.EntitlementServiceStub(channel)

    def read() -> bool:
        response = stub.GetEntitlement(
            entitlement_service_pb2.GetEntitlementRequest(user_id=user_id, feature_id=feature_id),
            timeout=10,
        )
        return bool(response.entitlement.granted)

    return read


def channels_to_each_worker(target: str, worker_pids: list[int]) -> dict[int, grpc.Channel]:
    """A channel (its own connection) held by each worker of `serve --workers N`; calls
    on it send their credential themselves."""
    port = int(target.rsplit(":", 1)[1])
    held: dict[int, grpc.Channel] = {}
    for _ in range(64):
        if len(held) == len(worker_pids):
            return held
        before = balance.own_socket_inodes()
        channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        grpc.channel_ready_future(channel).result(timeout=20)
        pid = balance.worker_of(balance.own_socket_inodes() - before, port, tuple(worker_pids))
        if pid is not None and pid not in held:
            held[pid] = channel
        else:
            channel.close()
    pytest.fail(f"no connection to every worker: {sorted(held)} of {worker_pids}")
