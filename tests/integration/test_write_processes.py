"""Writes across real server processes sharing one SQLite file: read-your-writes through
a consistency token, and durability of acknowledged writes across kill -9."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest

from entitlements.v1 import common_pb2, entitlement_service_pb2, entitlement_service_pb2_grpc
from service.grpc_api.auth import with_bearer_token
from storage.sqlite import SqliteRepository
from tests.support.clients import grant_request, writer
from tests.support.harness import SERVICE_TOKEN, write_test_credentials
from tests.support.processes import server_process

pytestmark = pytest.mark.subprocess


def reader(target: str) -> entitlement_service_pb2_grpc.EntitlementServiceStub:
    channel = with_bearer_token(grpc.insecure_channel(target), SERVICE_TOKEN)
    return entitlement_service_pb2_grpc.EntitlementServiceStub(channel)


def test_token_from_one_process_is_honoured_by_another(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    with server_process(db, credentials) as a, server_process(db, credentials) as b:
        read_b = reader(b.target)

        def granted_on_b(token: str = "") -> bool:
            response = read_b.GetEntitlement(
                entitlement_service_pb2.GetEntitlementRequest(
                    user_id="roamer",
                    feature_id="offline_downloads",
                    consistency=common_pb2.ReadConsistency(consistency_token=token),
                ),
                timeout=10,
            )
            return response.entitlement.granted

        assert not granted_on_b()  # process B now caches the free state
        written = writer(a.target).GrantEntitlement(grant_request("roamer", "w-1"), timeout=10)
        # At once, before B's change feed poll could drop its entry: the token makes B
        # read a state at least as new as the write.
        assert granted_on_b(written.consistency_token)


def test_kill_9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    db = tmp_path / "durable.db"
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    acknowledged: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()
    with server_process(db, credentials) as server:
        stub = writer(server.target)

        def burst(worker: int) -> None:
            for i in range(2000):
                user_id = f"durable-{worker}-{i}"
                try:
                    stub.GrantEntitlement(grant_request(user_id, f"req-{i}"), timeout=10)
                except grpc.RpcError:
                    return  # the server died under us
                with lock:
                    acknowledged.append(user_id)
                    if len(acknowledged) >= 150:
                        enough.set()

        threads = [threading.Thread(target=burst, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        assert enough.wait(timeout=60), "the burst did not get going"
        server.kill_hard()
        for thread in threads:
            thread.join(timeout=60)
    assert len(acknowledged) >= 150
    repository = SqliteRepository(db)
    try:
        lost = [
            user_id
            for user_id in acknowledged
            if not any(
                g.feature_id == "offline_downloads" for g in repository.load(user_id).account.grants
            )
        ]
    finally:
        repository.close()
    assert lost == []
    # And a restarted server answers from the surviving state.
    with server_process(db, credentials) as restarted:
        response = reader(restarted.target).GetEntitlement(
            entitlement_service_pb2.GetEntitlementRequest(
                user_id=acknowledged[-1], feature_id="offline_downloads"
            ),
            timeout=10,
        )
        assert response.entitlement.granted
