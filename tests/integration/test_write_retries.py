"""Retries of writes through a real server whose clock moves: a retry with the same id
and the same content replays the first answer, whenever it arrives."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements.v1 import subscription_event_service_pb2_grpc as ev_grpc
from service.config import Settings
from service.grpc_api.auth import with_bearer_token
from service.grpc_api.server import start_server
from tests.support.clocks import MovingClock
from tests.support.harness import ADMIN_TOKEN, write_test_credentials


def test_a_grant_retried_later_replays_its_first_answer(tmp_path: Path) -> None:
    """A grant starting "now" (starts_at unset) for "14 days" (duration), retried with the
    same request id after the clock moved (a retry after UNAVAILABLE or a deadline), gets
    the first answer, not ALREADY_EXISTS: the fingerprint covers what the caller sent,
    never what the server filled in."""
    settings = Settings(
        port=0,
        storage_url="memory://",
        credentials_file=write_test_credentials(tmp_path / "credentials.yaml"),
    )
    clock = MovingClock()
    running = start_server(settings, clock=clock)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = ev_grpc.SubscriptionEventServiceStub(with_bearer_token(channel, ADMIN_TOKEN))
            request = ev.GrantEntitlementRequest(
                request_id="retried-1",
                user_id="retry-user",
                grant=ev.Grant(kind=ev.GRANT_KIND_SUPPORT, feature_id="offline_downloads"),
            )
            request.duration.FromTimedelta(timedelta(days=14))
            first = stub.GrantEntitlement(request, timeout=5)
            clock.advance(timedelta(seconds=30))  # a retry after UNAVAILABLE, say
            again = stub.GrantEntitlement(request, timeout=5)
            assert again.grant == first.grant
            starts = first.grant.starts_at.ToDatetime()
            assert first.grant.expires_at.ToDatetime() - starts == timedelta(days=14)
            request.duration.FromTimedelta(timedelta(days=15))
            with pytest.raises(grpc.RpcError) as raised:
                stub.GrantEntitlement(request, timeout=5)
            assert raised.value.code() is grpc.StatusCode.ALREADY_EXISTS
    finally:
        running.stop(0)
