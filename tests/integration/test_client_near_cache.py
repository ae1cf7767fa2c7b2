"""The client library (clients/python/client, `entitlements_client`) with its near cache,
through real servers: an in-process server on a SQLite file (its RPCs counted by its own
metrics) and `entitlements serve` child processes on the same file, with the real clock.

Each reproduction of issue 22: a hit needs no RPC; another process's write invalidates;
a feed gap resets; a stream outage serves cached answers flagged stale only within the
staleness bound, then RPCs; read-your-writes; valid_until expires an entry without any
write; adaptive throttling under a refusing server."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from prometheus_client import REGISTRY

from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements_client import EntitlementsClient, EntitlementsError, Throttled
from service.config import Settings
from service.grpc_api.server import RunningServer, start_server
from storage.sqlite import SqliteRepository
from tests.support.harness import ADMIN_TOKEN, SERVICE_TOKEN, write_test_credentials
from tests.support.metrics import free_port, scrape, value
from tests.support.polling import eventually
from tests.support.processes import ServerProcess, server_process
from tests.support.tls import make_cert, tls_server

FEATURE = "offline_downloads"
WAIT = 20.0  # generous: a busy machine


def server_rpcs(method: str = "GetEntitlement", service: str = "EntitlementService") -> float:
    """RPCs the in-process server started (its metrics, shared by the test process)."""
    labels = {"grpc_service": f"entitlements.v1.{service}", "grpc_method": method}
    value = REGISTRY.get_sample_value("grpc_server_started_total", {**labels, "grpc_type": "unary"})
    return value or 0.0


def grant(user_id: str, request_id: str, seconds: int | None = None) -> ev.GrantEntitlementRequest:
    request = ev.GrantEntitlementRequest(
        request_id=request_id,
        user_id=user_id,
        grant=ev.Grant(kind=ev.GRANT_KIND_SUPPORT, feature_id=FEATURE),
    )
    if seconds is not None:
        request.duration.CopyFrom(Duration(seconds=seconds))
    return request


class Servers:
    def __init__(self, folder: Path) -> None:
        self.db = folder / "entitlements.db"
        SqliteRepository(self.db).close()  # migrated before any server starts
        self.credentials = write_test_credentials(folder / "credentials.yaml")
        self.clients: list[EntitlementsClient] = []

    def start(self, **settings: Any) -> RunningServer:
        return start_server(
            Settings(
                host="127.0.0.1",
                port=0,
                storage_url=f"sqlite:///{self.db}",
                credentials_file=self.credentials,
                metrics_port=1,  # counts RPCs in this process (no endpoint in-process)
                **settings,
            ),
            repository=SqliteRepository(self.db),
        )

    def client(self, target: str, *, admin: bool = False, **options: Any) -> EntitlementsClient:
        client = EntitlementsClient(
            target,
            credential=ADMIN_TOKEN if admin else SERVICE_TOKEN,
            read_timeout=WAIT,
            **options,
        )
        self.clients.append(client)
        return client

    def cached_client(
        self, target: str, *, admin: bool = False, **options: Any
    ) -> EntitlementsClient:
        client = self.client(target, admin=admin, near_cache=True, **options)
        assert client.cache is not None
        eventually(lambda: client.cache is not None and client.cache.stream_fresh, WAIT, 0.02)
        return client


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    servers = Servers(tmp_path_factory.mktemp("near-cache"))
    yield servers
    for client in servers.clients:
        client.close()


@pytest.fixture(scope="module")
def server(servers: Servers) -> Iterator[RunningServer]:
    running = servers.start()
    yield running
    running.stop(grace_seconds=1)


@pytest.fixture(scope="module")
def other_process(servers: Servers, server: RunningServer) -> Iterator[ServerProcess]:
    """`entitlements serve` on the same SQLite file: another process's writes."""
    with server_process(servers.db, servers.credentials) as process:
        yield process


def target_of(running: RunningServer) -> str:
    return f"127.0.0.1:{running.port}"


def test_a_hit_sends_no_rpc(servers: Servers, server: RunningServer) -> None:
    client = servers.cached_client(target_of(server))
    first = client.get_entitlement("hit-user", FEATURE)
    assert not first.granted
    assert not first.stale
    before = server_rpcs()
    for _ in range(200):
        again = client.get_entitlement("hit-user", FEATURE)
        assert again is first
    assert server_rpcs() == before
    assert client.cache is not None
    assert client.cache.stats.hits >= 200


@pytest.mark.subprocess
def test_another_processs_write_invalidates_the_entry(
    servers: Servers, server: RunningServer, other_process: ServerProcess
) -> None:
    client = servers.cached_client(target_of(server))
    assert not client.get_entitlement("roamer", FEATURE).granted
    servers.client(other_process.target, admin=True).grant_entitlement(grant("roamer", "r-1"))
    seconds = eventually(lambda: client.get_entitlement("roamer", FEATURE).granted, WAIT, 0.02)
    assert seconds < 5, f"seen after {seconds:.2f} s"
    assert client.cache is not None
    assert client.cache.stats.invalidations >= 1
    answer = client.get_entitlement("roamer", FEATURE)
    assert answer.granted
    assert answer.source_type == "GRANT"
    assert not answer.stale


@pytest.mark.subprocess
def test_read_your_writes_through_the_cache(
    servers: Servers, server: RunningServer, other_process: ServerProcess
) -> None:
    client = servers.cached_client(target_of(server), admin=True)
    assert not client.get_entitlement("ryw-user", FEATURE).granted  # cached
    client.grant_entitlement(grant("ryw-user", "ryw-1"))
    # At once: never the cached answer from before the write.
    assert client.get_entitlement("ryw-user", FEATURE).granted

    # A token from another process's write, passed in: never answered from older state.
    reader = servers.cached_client(target_of(server))
    assert not reader.get_entitlement("ryw-other", FEATURE).granted
    written = servers.client(other_process.target, admin=True).grant_entitlement(
        grant("ryw-other", "ryw-2")
    )
    answer = reader.get_entitlement(
        "ryw-other", FEATURE, consistency_token=written.consistency_token
    )
    assert answer.granted
    # And that answer is cached under the token: the same read again needs no RPC.
    before = server_rpcs()
    assert reader.get_entitlement(
        "ryw-other", FEATURE, consistency_token=written.consistency_token
    ).granted
    assert server_rpcs() == before


def test_valid_until_expires_an_entry_without_any_write(
    servers: Servers, server: RunningServer
) -> None:
    client = servers.cached_client(target_of(server))
    servers.client(target_of(server), admin=True).grant_entitlement(
        grant("short-grant", "sg-1", seconds=3)
    )
    # The grant's own change has reached the stream: nothing else will drop the entry.
    assert client.cache is not None
    eventually(
        lambda: client.cache is not None and client.cache.stats.invalidations >= 1, WAIT, 0.02
    )
    answer = client.get_entitlement("short-grant", FEATURE)
    assert answer.granted
    assert answer.valid_until is not None
    before = server_rpcs()
    assert client.get_entitlement("short-grant", FEATURE) is answer  # a hit
    assert server_rpcs() == before
    wait = (answer.valid_until - datetime.now(UTC)).total_seconds()
    time.sleep(max(0.0, wait) + 0.05)
    later = client.get_entitlement("short-grant", FEATURE)
    assert not later.granted
    assert server_rpcs() == before + 1


@pytest.mark.subprocess
def test_a_stream_outage_serves_stale_within_the_bound_then_reads(servers: Servers) -> None:
    running = servers.start()
    try:
        client = servers.cached_client(
            target_of(running), staleness_bound=2.0, heartbeat_timeout=0.5
        )
        cached = client.get_entitlement("outage-user", FEATURE)
        before = server_rpcs()
        running.app.changes.close()  # the server ends the stream and refuses new ones
        follower = client.change_stream
        assert follower is not None
        eventually(lambda: client.cache is not None and not client.cache.stream_fresh, WAIT, 0.02)
        served = client.get_entitlement("outage-user", FEATURE)
        assert served.stale
        assert served.granted == cached.granted
        assert server_rpcs() == before  # from the cache, flagged stale
        time.sleep(2.1)  # past the staleness bound since the stream's last message
        read = client.get_entitlement("outage-user", FEATURE)
        assert not read.stale
        assert server_rpcs() == before + 1
        # And not cached while the stream is down: the next read goes to the server too.
        client.get_entitlement("outage-user", FEATURE)
        assert server_rpcs() == before + 2
    finally:
        running.stop(grace_seconds=1)


def test_start_up_never_waits_for_the_stream(servers: Servers) -> None:
    """A server refusing change streams from the start: the client answers at once by
    RPC, and caches nothing (nothing could tell it of a change)."""
    running = servers.start()
    try:
        running.app.changes.close()
        client = servers.client(target_of(running), near_cache=True)
        before = server_rpcs()
        began = time.monotonic()
        for _ in range(3):
            assert not client.get_entitlement("startup-user", FEATURE).granted
        assert time.monotonic() - began < WAIT
        assert server_rpcs() == before + 3
        assert client.cache is not None
        assert len(client.cache) == 0
        assert not client.cache.stream_fresh
    finally:
        running.stop(grace_seconds=1)


@pytest.mark.subprocess
def test_a_feed_gap_resets_the_near_cache(servers: Servers, tmp_path: Path) -> None:
    """The server the client follows loses changes from its feed (made as in
    test_freshness: its process stopped while they are deleted): it tells the client
    `reset`, and the client drops everything and reads the new state."""
    db = tmp_path / "gap.db"
    SqliteRepository(db).close()
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    metrics_port = free_port()
    env = {"ENTITLEMENTS_METRICS_PORT": str(metrics_port)}
    with server_process(db, credentials) as a, server_process(db, credentials, env=env) as b:
        client = servers.cached_client(b.target)
        assert not client.get_entitlement("gap-user", FEATURE).granted
        follower = client.change_stream
        assert follower is not None
        assert client.cache is not None
        os.kill(b.process.pid, signal.SIGSTOP)
        try:
            admin = servers.client(a.target, admin=True)
            admin.grant_entitlement(grant("gap-user", "gap-1"))
            admin.grant_entitlement(grant("gap-other", "gap-2"))
            with sqlite3.connect(db) as connection:
                connection.execute("DELETE FROM user_changes WHERE user_id = 'gap-user'")
        finally:
            os.kill(b.process.pid, signal.SIGCONT)
        eventually(lambda: follower.resets >= 1, WAIT, 0.02)
        assert client.cache.stats.resets >= 1
        assert client.get_entitlement("gap-user", FEATURE).granted

        def counted() -> bool:  # the worker copies its counts every second
            samples = scrape(metrics_port)
            return (
                value(samples, "entitlements_change_stream_resets_total") >= 1
                and value(samples, "entitlements_change_streams_open") == 1
            )

        eventually(counted, WAIT, 0.02)


class Refusing:
    """A real gRPC server whose every method answers RESOURCE_EXHAUSTED (a server
    shedding everything), counting the calls that reach it."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        self.server.add_generic_rpc_handlers((self,))  # type: ignore[arg-type]
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def service(self, details: Any) -> grpc.RpcMethodHandler[Any, Any]:
        def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
            with self._lock:
                self.calls += 1
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "shedding load")

        return grpc.unary_unary_rpc_method_handler(refuse)


def test_adaptive_throttling_under_a_refusing_server(servers: Servers) -> None:
    refusing = Refusing()
    try:
        client = servers.client(f"127.0.0.1:{refusing.port}")
        throttled = 0
        refusals: list[grpc.StatusCode] = []
        for index in range(300):
            try:
                client.get_entitlement(f"u{index}", FEATURE)
            except Throttled:
                throttled += 1
            except EntitlementsError as error:
                refusals.append(error.code)
        assert set(refusals) <= {grpc.StatusCode.RESOURCE_EXHAUSTED}, set(refusals)
        refused = len(refusals)
        assert throttled + refused == 300
        # Most calls never left the process: p = (requests - 2 * 0) / (requests + 1).
        assert throttled > 250, (throttled, refused)
        assert client.throttle is not None
        assert client.throttle.probability() > 0.9
        # What reached the server: the calls let through (and gRPC's few retries of them).
        assert refusing.calls < 3 * refused + 1
        assert refusing.calls < 100
    finally:
        refusing.server.stop(None)


def test_the_client_speaks_mutual_tls_with_its_bearer_credential(tmp_path: Path) -> None:
    server_cert = make_cert("entitlements-server")
    client_ca = make_cert("client-ca", ca=True)
    client_cert = make_cert("playback-backend", client_ca)
    running = tls_server(tmp_path, server_cert, client_ca)
    target = target_of(running)
    try:
        with EntitlementsClient(
            target,
            credential=SERVICE_TOKEN,
            root_certificates=server_cert.cert,
            private_key=client_cert.key,
            certificate_chain=client_cert.cert,
            near_cache=True,
            read_timeout=WAIT,
        ) as client:
            eventually(lambda: client.cache is not None and client.cache.stream_fresh, WAIT, 0.02)
            first = client.get_entitlement("tls-user", FEATURE)
            assert client.get_entitlement("tls-user", FEATURE) is first  # cached over TLS
        with EntitlementsClient(
            target, credential=SERVICE_TOKEN, root_certificates=server_cert.cert, read_timeout=5
        ) as no_certificate:
            with pytest.raises(EntitlementsError) as refused:
                no_certificate.get_entitlement("tls-user", FEATURE)
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop(0)
