"""Operations through real servers: the metrics endpoint of a 2-worker `entitlements serve`
sums the workers, JSON logs carry no token, credential or raw user id, liveness ignores the
store while readiness follows it, SIGTERM drains, and the worker count and port follow the
container (CPU affinity, PORT)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from entitlements.v1 import common_pb2, entitlement_service_pb2_grpc
from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements.v1 import subscription_event_service_pb2_grpc as ev_grpc
from service.grpc_api.auth import bearer_metadata
from service.grpc_api.cpus import available_cpus
from service.grpc_api.server import LIVENESS_SERVICE
from tests.support.faulty import NOT_SERVING, SERVING, code_of, faulty_server
from tests.support.harness import ADMIN_TOKEN, SERVICE_TOKEN, write_test_credentials
from tests.support.metrics import free_port, scrape, value
from tests.support.polling import eventually
from tests.support.processes import ENTITLEMENTS, await_serving, server_process

ENTITLEMENT_SERVICE = "entitlements.v1.EntitlementService"
EVENT_SERVICE = "entitlements.v1.SubscriptionEventService"


def fresh_channel(target: str) -> grpc.Channel:
    """A channel with a connection of its own (not shared with other channels), so that
    the kernel may hand it to any worker."""
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def health_status(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=service)
    return int(stub.Check(request, timeout=5).status)  # type: ignore[attr-defined]


# --- metrics summed across two workers ---------------------------------------------------


@pytest.mark.subprocess
def test_metrics_of_two_workers_add_up(tmp_path: Path) -> None:
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    metrics_port = free_port()
    connections, reads_per_connection = 16, 5
    reads = connections * reads_per_connection
    env = {"ENTITLEMENTS_METRICS_PORT": str(metrics_port)}
    with server_process(tmp_path / "m.db", credentials, workers=2, env=env) as server:
        assert f"metrics on http://127.0.0.1:{metrics_port}/metrics" in "".join(server.output)
        for connection in range(connections):
            with fresh_channel(server.target) as channel:
                stub = entitlement_service_pb2_grpc.EntitlementServiceStub(channel)
                writes = ev_grpc.SubscriptionEventServiceStub(channel)
                for i in range(reads_per_connection):
                    stub.GetEntitlement(
                        es.GetEntitlementRequest(
                            user_id=f"metrics-{connection}", feature_id="shuffle_play"
                        ),
                        metadata=bearer_metadata(SERVICE_TOKEN),
                        timeout=10,
                    )
                    assert i < reads_per_connection
                # One write per connection: its audit line names the worker that served it.
                writes.GrantEntitlement(
                    ev.GrantEntitlementRequest(
                        request_id=f"metrics-grant-{connection}",
                        user_id=f"metrics-{connection}",
                        grant=ev.Grant(
                            kind=ev.GRANT_KIND_PROMOTIONAL, feature_id="high_fidelity_audio"
                        ),
                    ),
                    metadata=bearer_metadata(ADMIN_TOKEN),
                    timeout=10,
                )
                # Refused: a bad feature id (INVALID_ARGUMENT) and no token.
                assert (
                    code_of(
                        lambda stub=stub: stub.GetEntitlement(
                            es.GetEntitlementRequest(user_id="metrics-x", feature_id="no such"),
                            metadata=bearer_metadata(SERVICE_TOKEN),
                            timeout=10,
                        )
                    )
                    is grpc.StatusCode.INVALID_ARGUMENT
                )
                assert (
                    code_of(
                        lambda stub=stub: stub.GetEntitlement(
                            es.GetEntitlementRequest(
                                user_id="metrics-x", feature_id="shuffle_play"
                            ),
                            timeout=10,
                        )
                    )
                    is grpc.StatusCode.UNAUTHENTICATED
                )
        audit_pids = {
            json.loads(line)["pid"]
            for line in list(server.output)
            if '"method":"entitlements.v1.SubscriptionEventService/GrantEntitlement"' in line
        }
        assert len(audit_pids) == 2, "the writes did not reach both workers"

        def counted() -> bool:
            samples = scrape(metrics_port)
            lookups = value(samples, "entitlements_cache_lookups_total")
            return lookups >= reads  # the workers copy their counts every second

        with fresh_channel(server.target) as channel:  # a user left in a cache
            entitlement_service_pb2_grpc.EntitlementServiceStub(channel).GetEntitlement(
                es.GetEntitlementRequest(user_id="metrics-last", feature_id="shuffle_play"),
                metadata=bearer_metadata(SERVICE_TOKEN),
                timeout=10,
            )
        reads += 1
        eventually(counted)
        samples = scrape(metrics_port)

    get = {"grpc_service": ENTITLEMENT_SERVICE, "grpc_method": "GetEntitlement"}
    grant = {"grpc_service": EVENT_SERVICE, "grpc_method": "GrantEntitlement"}
    handled = "grpc_server_handled_total"
    assert value(samples, handled, grpc_code="OK", **get) == reads
    assert value(samples, handled, grpc_code="INVALID_ARGUMENT", **get) == connections
    assert value(samples, handled, grpc_code="UNAUTHENTICATED", **get) == connections
    assert value(samples, handled, grpc_code="OK", **grant) == connections
    assert value(samples, "grpc_server_started_total", **get) == reads + 2 * connections
    assert value(samples, "grpc_server_started_total", grpc_type="unary", **grant) == connections
    # The histogram: every call in _count, cumulative buckets ending at the count.
    calls = reads + 2 * connections
    assert value(samples, "grpc_server_handling_seconds_count", **get) == calls
    assert value(samples, "grpc_server_handling_seconds_bucket", le="+Inf", **get) == calls
    assert 0 < value(samples, "grpc_server_handling_seconds_bucket", le="0.0005", **get) <= calls
    assert value(samples, "grpc_server_handling_seconds_sum", **get) > 0
    # Each user was read once from the store by its own connection's worker, and then hit;
    # the write invalidates the user (later reads of that user are not part of this test).
    misses = connections + 1
    assert value(samples, "entitlements_cache_lookups_total", result="miss") == misses
    assert value(samples, "entitlements_cache_lookups_total", result="hit") == reads - misses
    assert value(samples, "entitlements_cache_lookups_total", result="stale") == 0
    assert value(samples, "entitlements_store_call_seconds_count", operation="load") == misses
    assert value(samples, "entitlements_store_call_seconds_count", operation="grant") == connections
    assert value(samples, "entitlements_store_errors_total") == 0
    assert value(samples, "entitlements_rpcs_shed_total") == 0
    assert value(samples, "entitlements_store_ready") == 1
    # The writes invalidated their users: only the last one is cached.
    assert value(samples, "entitlements_cache_entries") == 1
    assert value(samples, "entitlements_worker_restarts_total") == 0
    assert [labels for (name, labels) in samples if name == "entitlements_catalog_info"]
    assert value(samples, "entitlements_build_info") == 1


@pytest.mark.subprocess
def test_a_replaced_worker_is_counted_and_its_gauges_leave(tmp_path: Path) -> None:
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    metrics_port = free_port()
    env = {"ENTITLEMENTS_METRICS_PORT": str(metrics_port)}
    with server_process(tmp_path / "r.db", credentials, workers=2, env=env) as server:
        match = re.search(r"pids (\d+), (\d+)", "".join(server.output))
        assert match
        os.kill(int(match.group(1)), signal.SIGKILL)
        eventually(lambda: "worker 0 restarted" in "".join(server.output))
        eventually(lambda: value(scrape(metrics_port), "entitlements_worker_restarts_total") == 1)
        # Two live workers, each ready: the dead one's gauge is gone from the minimum.
        eventually(lambda: value(scrape(metrics_port), "entitlements_store_ready") == 1)
        catalogs = [n for (n, _) in scrape(metrics_port) if n == "entitlements_catalog_info"]
        assert len(catalogs) == 1


@pytest.mark.subprocess
def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    with server_process(tmp_path / "off.db", credentials) as server:
        assert "metrics on" not in "".join(server.output)


# --- logs ------------------------------------------------------------------------------


def failing_calls(
    reads: entitlement_service_pb2_grpc.EntitlementServiceStub,
    writes: ev_grpc.SubscriptionEventServiceStub,
    user: str,
    tag: str,
    wrong_token: str,
) -> list[Callable[[], object]]:
    """Calls about `user` that fail: refused credentials, invalid, not found."""
    service, admin = bearer_metadata(SERVICE_TOKEN), bearer_metadata(ADMIN_TOKEN)
    return [
        # a wrong token, the service token on a write, no token
        lambda: reads.GetEntitlement(
            es.GetEntitlementRequest(user_id=user, feature_id="shuffle_play"),
            metadata=bearer_metadata(wrong_token),
            timeout=10,
        ),
        lambda: writes.RevokeEntitlement(
            ev.RevokeEntitlementRequest(request_id=f"logs-x-{tag}", user_id=user, grant_id="g"),
            metadata=service,
            timeout=10,
        ),
        lambda: reads.GetEntitlement(
            es.GetEntitlementRequest(user_id=user, feature_id="shuffle_play"),
            timeout=10,
        ),
        # invalid, not found, a malformed token
        lambda: reads.GetEntitlement(
            es.GetEntitlementRequest(user_id=user, feature_id="no such feature"),
            metadata=service,
            timeout=10,
        ),
        lambda: writes.RevokeEntitlement(
            ev.RevokeEntitlementRequest(
                request_id=f"logs-nf-{tag}", user_id=user, grant_id="no-such-grant"
            ),
            metadata=admin,
            timeout=10,
        ),
        lambda: reads.GetEntitlement(
            es.GetEntitlementRequest(
                user_id=user,
                feature_id="shuffle_play",
                consistency=common_pb2.ReadConsistency(consistency_token="forged-" + user),
            ),
            metadata=service,
            timeout=10,
        ),
    ]


@pytest.mark.subprocess
def test_logs_of_a_full_run_are_json_without_secrets(tmp_path: Path) -> None:
    """Reads, writes, refused credentials and errors through a real 2-worker server; every
    line it writes is JSON, and none carries a token, a credential or a raw user id."""
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    wrong_token = "wrong-token-5f0c2b7e9d31a846"
    users = [f"private-person-{n}@example.com" for n in range(6)]
    env = {"ENTITLEMENTS_METRICS_PORT": str(free_port())}
    with server_process(tmp_path / "logs.db", credentials, workers=2, env=env) as server:
        for n, user in enumerate(users):
            with fresh_channel(server.target) as channel:
                reads = entitlement_service_pb2_grpc.EntitlementServiceStub(channel)
                writes = ev_grpc.SubscriptionEventServiceStub(channel)
                service, admin = bearer_metadata(SERVICE_TOKEN), bearer_metadata(ADMIN_TOKEN)
                reads.GetEntitlement(
                    es.GetEntitlementRequest(user_id=user, feature_id="shuffle_play"),
                    metadata=service,
                    timeout=10,
                )
                reads.ListEntitlements(
                    es.ListEntitlementsRequest(user_id=user), metadata=service, timeout=10
                )
                granted = writes.GrantEntitlement(
                    ev.GrantEntitlementRequest(
                        request_id=f"logs-{n}",
                        user_id=user,
                        grant=ev.Grant(
                            kind=ev.GRANT_KIND_PROMOTIONAL, feature_id="high_fidelity_audio"
                        ),
                    ),
                    metadata=admin,
                    timeout=10,
                )
                writes.RevokeEntitlement(
                    ev.RevokeEntitlementRequest(
                        request_id=f"logs-r-{n}", user_id=user, grant_id=granted.grant.grant_id
                    ),
                    metadata=admin,
                    timeout=10,
                )
                failures = failing_calls(reads, writes, user, f"{n}", wrong_token)
                codes = {code_of(failure) for failure in failures}
                assert grpc.StatusCode.OK not in codes
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
    lines = [line.rstrip("\n") for line in server.output if line.strip()]
    secrets = [
        SERVICE_TOKEN,
        ADMIN_TOKEN,
        wrong_token,
        *users,
        *(user.split("@")[0] for user in users),
        # the token digests of the credentials file
        *re.findall(r"token_sha256: (\w+)", credentials.read_text()),
    ]
    for line in lines:
        for secret in secrets:
            assert secret not in line, f"{secret!r} logged: {line}"
        if line.startswith("entitlements: "):
            continue  # the command's own messages to the operator
        entry = json.loads(line)  # every other line is one JSON object
        # One format for every line, the audit records' included (issue 25).
        assert {"timestamp", "level", "logger", "message", "pid"} <= set(entry), line
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    audited = [entry for entry in logged if entry["logger"] == "entitlements.audit"]
    assert len(audited) >= 2 * len(users)
    assert all("outcome" in entry and "time" not in entry for entry in audited)


def test_a_store_outage_logs_its_cause_when_it_starts_and_ends_without_tracebacks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with faulty_server(tmp_path, readiness_interval_seconds=0.1, cache_ttl_seconds=0.01) as server:
        server.store.failing = True
        eventually(lambda: server.status() == NOT_SERVING)
        for i in range(20):
            assert code_of(lambda i=i: server.get(f"outage-{i}")) is grpc.StatusCode.UNAVAILABLE
        server.store.failing = False
        eventually(lambda: server.status() == SERVING)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("store unreachable" in m for m in messages) == 1
    assert sum("store recovered" in m for m in messages) == 1
    # One line for the failed RPCs of the interval, not one each.
    assert sum(m.startswith("store unavailable") for m in messages) <= 1


# --- health: liveness, readiness, drain -------------------------------------------------


def test_liveness_stays_serving_while_the_store_is_down(tmp_path: Path) -> None:
    with faulty_server(tmp_path, readiness_interval_seconds=0.1) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.running.port}")
        with channel:
            assert health_status(channel, LIVENESS_SERVICE) == SERVING
            server.store.failing = True
            eventually(lambda: server.status() == NOT_SERVING)
            for service in ("", ENTITLEMENT_SERVICE, EVENT_SERVICE):
                assert health_status(channel, service) == NOT_SERVING
            assert health_status(channel, LIVENESS_SERVICE) == SERVING
            server.store.failing = False
            eventually(lambda: server.status() == SERVING)


@pytest.mark.subprocess
def test_sigterm_turns_readiness_off_then_serves_for_the_drain_delay(tmp_path: Path) -> None:
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    env = {"ENTITLEMENTS_DRAIN_DELAY_SECONDS": "2", "ENTITLEMENTS_SHUTDOWN_GRACE_SECONDS": "1"}
    with (
        server_process(tmp_path / "drain.db", credentials, workers=2, env=env) as server,
        grpc.insecure_channel(server.target) as channel,
    ):
        stub = entitlement_service_pb2_grpc.EntitlementServiceStub(channel)

        def read() -> grpc.StatusCode:
            return code_of(
                lambda: stub.GetEntitlement(
                    es.GetEntitlementRequest(user_id="drain", feature_id="shuffle_play"),
                    metadata=bearer_metadata(SERVICE_TOKEN),
                    timeout=5,
                )
            )

        assert health_status(channel, "") == SERVING
        assert read() is grpc.StatusCode.OK
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        eventually(lambda: health_status(channel, "") == NOT_SERVING, seconds=1.5)
        assert health_status(channel, ENTITLEMENT_SERVICE) == NOT_SERVING
        assert health_status(channel, LIVENESS_SERVICE) == SERVING
        assert read() is grpc.StatusCode.OK  # still serving while load balancers notice
        assert time.monotonic() - signalled < 2
        assert server.process.wait(timeout=20) == 0
        assert time.monotonic() - signalled >= 2


# --- the container: CPUs and PORT -------------------------------------------------------


def test_available_cpus_follow_the_cgroup_quota(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    affinity = len(os.sched_getaffinity(0))
    cpu_max.write_text("max 100000\n")
    assert available_cpus(cpu_max) == affinity
    cpu_max.write_text("50000 100000\n")  # half a CPU: one worker
    assert available_cpus(cpu_max) == 1
    cpu_max.write_text("150000 100000\n")
    assert available_cpus(cpu_max) == min(affinity, 2)
    assert available_cpus(tmp_path / "missing") == affinity


@contextmanager
def serve_default_workers(
    tmp_path: Path, env: dict[str, str], preexec: Callable[[], None] | None = None
) -> Iterator[tuple[str, list[str]]]:
    """`entitlements serve` without --workers or --port."""
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    process = subprocess.Popen(
        [ENTITLEMENTS, "serve", "--storage", f"sqlite:///{tmp_path / 'cpu.db'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **os.environ,
            "ENTITLEMENTS_CREDENTIALS_FILE": str(credentials),
            "PYTHONUNBUFFERED": "1",
            **env,
        },
        preexec_fn=preexec,
    )
    try:
        target, output, _drain = await_serving(process)
        yield target, output
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@pytest.mark.subprocess
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_the_worker_count_follows_the_cpu_affinity_and_port_the_port_variable(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {"PORT": str(port)}
    with serve_default_workers(tmp_path, env, lambda: os.sched_setaffinity(0, {0})) as (
        target,
        output,
    ):
        assert target == f"127.0.0.1:{port}"
        assert "(1 worker," in "".join(output)
    port = free_port()
    with serve_default_workers(tmp_path, {"PORT": str(port)}) as (target, output):
        assert target == f"127.0.0.1:{port}"
        cpus = available_cpus()
        assert ("(1 worker," if cpus == 1 else f"({cpus} workers,") in "".join(output)


def test_watch_streams_are_counted_by_status_and_timed(tmp_path: Path) -> None:
    """WatchEntitlements had no request metrics (issue 25): now started, handled by code and
    its duration, like the unary calls (grpc_type server_stream)."""
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    metrics_port = free_port()
    env = {"ENTITLEMENTS_METRICS_PORT": str(metrics_port)}
    with server_process(tmp_path / "w.db", credentials, workers=1, env=env) as server:
        with grpc.insecure_channel(server.target) as channel:
            stub = entitlement_service_pb2_grpc.EntitlementServiceStub(channel)
            metadata = bearer_metadata(SERVICE_TOKEN)
            watching = stub.WatchEntitlements(
                es.WatchEntitlementsRequest(user_id="watched", feature_ids=["shuffle_play"]),
                metadata=metadata,
                timeout=30,
            )
            assert next(watching).entitlements
            time.sleep(0.2)  # open a moment: the duration is measured
            watching.cancel()  # the caller leaves: CANCELLED
            refused = stub.WatchEntitlements(
                es.WatchEntitlementsRequest(user_id="watched", feature_ids=["no such"]),
                metadata=metadata,
                timeout=30,
            )
            assert code_of(lambda: next(refused)) is grpc.StatusCode.INVALID_ARGUMENT
        watch = {
            "grpc_service": ENTITLEMENT_SERVICE,
            "grpc_method": "WatchEntitlements",
            "grpc_type": "server_stream",
        }
        handled = "grpc_server_handled_total"

        def both_ended() -> bool:
            return value(scrape(metrics_port), handled, **watch) == 2

        eventually(both_ended)
        samples = scrape(metrics_port)
    assert value(samples, "grpc_server_started_total", **watch) == 2
    assert value(samples, handled, grpc_code="CANCELLED", **watch) == 1
    assert value(samples, handled, grpc_code="INVALID_ARGUMENT", **watch) == 1
    duration = "grpc_server_stream_duration_seconds"
    assert value(samples, f"{duration}_count", **watch) == 2
    assert value(samples, f"{duration}_sum", **watch) >= 0.2
    assert value(samples, f"{duration}_bucket", le="+Inf", **watch) == 2
    # Not in the unary latency histogram (its buckets and SLO are the unary calls').
    assert (
        value(samples, "grpc_server_handling_seconds_count", grpc_method="WatchEntitlements") == 0
    )
