"""A Spanner outage behind a real server: the emulator killed (kill -9, by its PID) and
restarted on the same port, while the server stays up. Every write answers within its
budget with a clear status during the outage, and the server heals by itself once
Spanner is back and migrated: no store thread stays busy or poisoned.

Each test kills an emulator of its own (private_spanner_emulator), never the session's.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import entitlement_service_pb2_grpc as es_grpc
from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements.v1 import subscription_event_service_pb2_grpc as ev_grpc
from service.config import Settings
from service.grpc_api.auth import with_bearer_token
from service.grpc_api.server import RunningServer, start_server
from storage.spanner import DatabasePath, SchemaNotReady, SpannerRepository, migrate
from tests.spanner_emulator import BUSY_MACHINE_STORE_TIMEOUT, SpannerEmulator
from tests.support.harness import ADMIN_TOKEN, SERVICE_TOKEN, write_test_credentials
from tests.support.polling import eventually

THREADS = 4  # store threads of the server
WRITE_TIMEOUT = 2.0
STORE_TIMEOUT = 1.0
# Far beyond the write timeout: a write the store call does not end in time answers
# DEADLINE_EXCEEDED only after this.
MAX_RPC = 20.0
# Scheduling slack on a busy 2-core machine.
SLACK = 2.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

_ids = itertools.count()

# An outage takes a while (and took minutes before the fixes): above the default 120 s.
pytestmark = pytest.mark.timeout(300)


@dataclass
class Server:
    running: RunningServer
    writes: ev_grpc.SubscriptionEventServiceStub
    reads: es_grpc.EntitlementServiceStub
    health: health_pb2_grpc.HealthStub

    def read(self, user_id: str) -> tuple[grpc.StatusCode, float]:
        """A GetEntitlement without a client deadline: its status and how long it took."""
        request = es.GetEntitlementRequest(user_id=user_id, feature_id="offline_downloads")
        started = time.monotonic()
        try:
            self.reads.GetEntitlement(request)
        except grpc.RpcError as error:
            failure = error
        else:
            return grpc.StatusCode.OK, time.monotonic() - started
        assert isinstance(failure, grpc.Call)
        return failure.code(), time.monotonic() - started

    def grant(self, user_id: str) -> tuple[grpc.StatusCode, float]:
        """A GrantEntitlement without a client deadline: its status and how long it took."""
        request = ev.GrantEntitlementRequest(
            request_id=f"g-{next(_ids)}",
            user_id=user_id,
            grant=ev.Grant(kind=ev.GRANT_KIND_SUPPORT, feature_id="offline_downloads"),
        )
        started = time.monotonic()
        try:
            self.writes.GrantEntitlement(request)
        except grpc.RpcError as error:
            failure = error
        else:
            return grpc.StatusCode.OK, time.monotonic() - started
        assert isinstance(failure, grpc.Call)
        return failure.code(), time.monotonic() - started

    def grants(self, count: int) -> list[tuple[grpc.StatusCode, float]]:
        """`count` concurrent grants, to distinct users."""
        with ThreadPoolExecutor(count) as pool:
            return list(pool.map(lambda i: self.grant(f"user-{i}"), range(count)))

    def status(self) -> int:
        started = time.monotonic()
        status: int = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status  # type: ignore[attr-defined]
        assert time.monotonic() - started < 1.0 + SLACK  # answered on the event loop
        return status

    def await_health(self, wanted: int, within: float = 15.0) -> None:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(wanted)
        eventually(lambda: self.status() == wanted, within, 0.1, f"health never became {name}")


@contextmanager
def serving(
    emulator: SpannerEmulator, database: DatabasePath, folder: Path, **settings: float
) -> Iterator[Server]:
    config = Settings(
        host="127.0.0.1",
        port=0,
        storage_url=database.url,
        credentials_file=write_test_credentials(folder / "credentials.yaml"),
        threads=THREADS,
        write_timeout_seconds=WRITE_TIMEOUT,
        max_rpc_seconds=MAX_RPC,
        store_timeout_seconds=settings.pop("store_timeout_seconds", STORE_TIMEOUT),
        **settings,  # type: ignore[arg-type]
    )
    running = start_server(config, repository=SpannerRepository(database, endpoint=emulator.host))
    target = f"127.0.0.1:{running.port}"
    channel = with_bearer_token(grpc.insecure_channel(target), ADMIN_TOKEN)
    reader = with_bearer_token(grpc.insecure_channel(target), SERVICE_TOKEN)
    try:
        yield Server(
            running,
            ev_grpc.SubscriptionEventServiceStub(channel),
            es_grpc.EntitlementServiceStub(reader),
            health_pb2_grpc.HealthStub(channel),
        )
    finally:
        channel.close()
        reader.close()
        running.stop(grace_seconds=0)


def codes(results: list[tuple[grpc.StatusCode, float]]) -> list[grpc.StatusCode]:
    return [code for code, _ in results]


def restart_unmigrated(emulator: SpannerEmulator, database: DatabasePath) -> None:
    """The emulator back on its port, with the database created again but empty."""
    emulator.restart()
    emulator.create_instance()
    emulator.create_database(name=database.database, migrated=False)


def test_a_write_while_spanner_is_down_answers_unavailable_within_the_write_timeout(
    private_spanner_emulator: SpannerEmulator, tmp_path: Path
) -> None:
    """Session creation against a refused port is retried by the client for ~30 s, each
    attempt failing at once: the whole store call, retries included, must end within
    the write's budget. Before, a write with no deadline took the whole RPC cap (27 s
    with the defaults) and its store thread stayed busy after it."""
    emulator = private_spanner_emulator
    database = emulator.create_database("outage")
    with serving(emulator, database, tmp_path, readiness_interval_seconds=3600) as server:
        assert codes(server.grants(THREADS)) == [grpc.StatusCode.OK] * THREADS
        emulator.kill()
        # Twice as many rounds as needed to see it: the second round finds every store
        # thread free again (a store call that outlived its write would hold one).
        for _ in range(2):
            results = server.grants(THREADS)
            assert codes(results) == [grpc.StatusCode.UNAVAILABLE] * THREADS
            slowest = max(seconds for _, seconds in results)
            assert slowest < WRITE_TIMEOUT + SLACK, results
        # A read of a user nobody cached: within the store timeout (the client restarts
        # a failed streaming query at once and without limit; it waits a backoff now).
        code, seconds = server.read("never-read")
        assert code is grpc.StatusCode.UNAVAILABLE
        assert seconds < STORE_TIMEOUT + SLACK
        assert server.status() == SERVING  # health still answers (readiness is off here)


def test_writes_succeed_after_spanner_comes_back_without_a_server_restart(
    private_spanner_emulator: SpannerEmulator, tmp_path: Path
) -> None:
    """Writes during an outage fail to check out a session on every store thread. With
    google-cloud-spanner 3.71 that left the thread marked as running a transaction, and
    every later write there failed as an unexpected error ("Spanner does not support
    nested transactions."; INTERNAL here, UNKNOWN on the earlier sync server) until the
    server restarted."""
    emulator = private_spanner_emulator
    database = emulator.create_database("heal")
    with serving(emulator, database, tmp_path, readiness_interval_seconds=0.3) as server:
        assert codes(server.grants(THREADS)) == [grpc.StatusCode.OK] * THREADS
        emulator.kill()
        # Each store thread fails a write or two (a failed session checkout).
        assert codes(server.grants(2 * THREADS)) == [grpc.StatusCode.UNAVAILABLE] * (2 * THREADS)
        server.await_health(NOT_SERVING)

        restart_unmigrated(emulator, database)
        # Back, but without the schema: still unavailable (never UNKNOWN).
        code, _ = server.grant("user-0")
        assert code is grpc.StatusCode.UNAVAILABLE
        migrate(database, endpoint=emulator.host)

        # Every store thread writes again; at most a transient UNAVAILABLE on the way.
        deadline = time.monotonic() + 30
        while True:
            seen = codes(server.grants(20))
            assert set(seen) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, seen
            if seen == [grpc.StatusCode.OK] * 20:
                break
            assert time.monotonic() < deadline, seen
            time.sleep(0.2)
        server.await_health(SERVING)


def test_health_follows_the_schema_and_recovers_after_migrate_without_a_restart(
    spanner_emulator: SpannerEmulator, tmp_path: Path
) -> None:
    """A server on an unmigrated database is NOT_SERVING and becomes SERVING once
    `migrate` ran, without a restart; the same when the database loses its schema later
    (a table dropped: the check query then fails with InvalidArgument, which used to
    end the readiness probe for good, leaving health as it was)."""
    database = spanner_emulator.create_database("readiness", migrated=False)
    with serving(
        spanner_emulator,
        database,
        tmp_path,
        readiness_interval_seconds=0.2,
        store_timeout_seconds=BUSY_MACHINE_STORE_TIMEOUT,
    ) as server:
        server.await_health(NOT_SERVING)
        assert codes([server.grant("u1")]) == [grpc.StatusCode.UNAVAILABLE]
        migrate(database, endpoint=spanner_emulator.host)
        server.await_health(SERVING)
        assert codes([server.grant("u1")]) == [grpc.StatusCode.OK]

        drop_migrations_table(spanner_emulator, database)
        server.await_health(NOT_SERVING)
        # Said as the missing migration (UNAVAILABLE), not the statement Spanner rejected.
        with pytest.raises(SchemaNotReady, match=f"entitlements migrate --storage {database.url}"):
            server.running.repository.check()
        migrate(database, endpoint=spanner_emulator.host)  # runs every migration again
        server.await_health(SERVING)
        assert codes([server.grant("u1")]) == [grpc.StatusCode.OK]


def drop_migrations_table(emulator: SpannerEmulator, database: DatabasePath) -> None:
    admin = emulator.admin_client().instance(emulator.instance).database(database.database)
    admin.update_ddl(["DROP TABLE SchemaMigrations"]).result(60)
