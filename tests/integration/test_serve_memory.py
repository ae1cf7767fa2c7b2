"""`entitlements serve --storage memory://`: the store lives inside one process, so several
workers would each hold their own and reads after a grant would alternate GRANTED/DENIED
(issue 25). An explicit --workers above 1 is refused; the default (one worker per core)
runs one worker and says so. Through the real console script on a free loopback port."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import entitlement_service_pb2_grpc as es_grpc
from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements.v1 import subscription_event_service_pb2_grpc as ev_grpc
from service.grpc_api.auth import bearer_metadata
from tests.support.cli import run_cli, serve
from tests.support.harness import ADMIN_TOKEN, SERVICE_TOKEN, write_test_credentials

pytestmark = pytest.mark.subprocess

# Reads on this many connections of their own: the kernel spreads connections (not RPCs)
# over the workers' sockets, so with two workers all of them landing on one is 2**-11.
CONNECTIONS = 12


def test_memory_store_with_several_workers_is_refused(tmp_path: Path) -> None:
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    result = run_cli(
        "serve",
        "--port",
        "0",
        "--storage",
        "memory://",
        "--workers",
        "2",
        cwd=tmp_path,
        check=False,
        env={"ENTITLEMENTS_CREDENTIALS_FILE": str(credentials)},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: memory:// lives inside one process"), result.stderr
    assert "--workers 1" in result.stderr
    assert "serving on" not in result.stdout


def test_memory_store_by_default_runs_one_worker_that_sees_its_writes(tmp_path: Path) -> None:
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    server = serve(
        tmp_path,
        "--storage",
        "memory://",
        env={"ENTITLEMENTS_CREDENTIALS_FILE": str(credentials)},
    )
    try:
        with grpc.insecure_channel(server.target) as channel:
            ev_grpc.SubscriptionEventServiceStub(channel).GrantEntitlement(
                ev.GrantEntitlementRequest(
                    request_id="memory-grant-1",
                    user_id="memory-user",
                    grant=ev.Grant(kind=ev.GRANT_KIND_SUPPORT, feature_id="offline_downloads"),
                ),
                metadata=bearer_metadata(ADMIN_TOKEN),
                timeout=30,
            )
        answers = []
        for connection in range(CONNECTIONS):
            # A distinct argument per channel: its own connection, not grpc's shared one.
            options = [("grpc.use_local_subchannel_pool", 1), ("test.connection", connection)]
            with grpc.insecure_channel(server.target, options=options) as channel:
                response = es_grpc.EntitlementServiceStub(channel).GetEntitlement(
                    es.GetEntitlementRequest(user_id="memory-user", feature_id="offline_downloads"),
                    metadata=bearer_metadata(SERVICE_TOKEN),
                    timeout=30,
                )
                answers.append(response.entitlement.granted)
        assert answers == [True] * CONNECTIONS
        assert "one worker: memory:// lives inside one process" in server.text()
        assert "workers, " not in server.text()  # not the supervisor's "N workers, pids"
    finally:
        server.stop()
