"""The audit log stays bounded under anonymous calls: anyone who reaches the port can
call the write service without a token, and each refused call used to write a line. Now
the first few per interval are recorded one by one and the rest counted, in one summary
line per method when the interval ends or the server stops; every call of an
authenticated principal (allowed or refused) is still recorded."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import re
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements.v1 import subscription_event_service_pb2_grpc as ev_grpc
from service.grpc_api.audit import ANONYMOUS_RECORDS_PER_INTERVAL, AuditLog
from service.grpc_api.auth import bearer_metadata
from service.grpc_api.logs import JsonFormatter, trace_id_var
from tests.support.harness import ADMIN_TOKEN, SERVICE_TOKEN, write_test_credentials
from tests.support.polling import eventually
from tests.support.processes import server_process

GRANT = "entitlements.v1.SubscriptionEventService/GrantEntitlement"
REVOKE = "entitlements.v1.SubscriptionEventService/RevokeEntitlement"
ANONYMOUS_CALLS = 500


def grant(request_id: str) -> ev.GrantEntitlementRequest:
    return ev.GrantEntitlementRequest(
        request_id=request_id,
        user_id=f"user-{request_id}",
        grant=ev.Grant(kind=ev.GRANT_KIND_SUPPORT, feature_id="shuffle_play"),
    )


def code_of(call: Any, request: Any, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    try:
        call(request, metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def authenticated(
    stub: ev_grpc.SubscriptionEventServiceStub,
    i: int,
    expected: dict[str, tuple[str | None, str]],
) -> None:
    """Three calls of authenticated principals: allowed, refused by the policy, and failed
    (no such grant); notes what each must be recorded with."""
    admin, service = bearer_metadata(ADMIN_TOKEN), bearer_metadata(SERVICE_TOKEN)
    revoke = ev.RevokeEntitlementRequest(
        request_id=f"missing-{i}", user_id="u", grant_id="no-such-grant"
    )
    for principal, metadata, call, request in (
        ("test-admin", admin, stub.GrantEntitlement, grant(f"ok-{i}")),
        ("test-service", service, stub.GrantEntitlement, grant(f"denied-{i}")),
        ("test-admin", admin, stub.RevokeEntitlement, revoke),
    ):
        expected[request.request_id] = (principal, code_of(call, request, metadata).name)


@pytest.mark.subprocess
@pytest.mark.parametrize("workers", [1, 2])
def test_anonymous_calls_leave_a_bounded_trail_and_every_admin_call_is_recorded(
    tmp_path: Path, workers: int
) -> None:
    audit = tmp_path / "audit.jsonl"
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    expected: dict[str, tuple[str | None, str]] = {}  # request id -> principal, outcome
    with server_process(
        tmp_path / "audit.db",
        credentials,
        workers=workers,
        env={"ENTITLEMENTS_AUDIT_LOG_FILE": str(audit)},
    ) as server:
        channels = [grpc.insecure_channel(server.target) for _ in range(4)]
        stubs = [ev_grpc.SubscriptionEventServiceStub(channel) for channel in channels]
        anonymous = Counter[str]()
        for i in range(ANONYMOUS_CALLS):
            stub = stubs[i % len(stubs)]
            # No token, or one nobody has: both anonymous.
            metadata = bearer_metadata("forged-token-0123456789") if i % 5 == 0 else ()
            if i % 2:
                code = code_of(stub.GrantEntitlement, grant(f"anon-{i}"), metadata)
                method = GRANT
            else:
                request = ev.RevokeEntitlementRequest(
                    request_id=f"anon-{i}", user_id="victim", grant_id="g-1"
                )
                code = code_of(stub.RevokeEntitlement, request, metadata)
                method = REVOKE
            assert code is grpc.StatusCode.UNAUTHENTICATED
            anonymous[method] += 1
            if i % 25 == 0:  # authenticated calls among them: each one recorded
                authenticated(stubs[(i // 25) % len(stubs)], i, expected)
        for channel in channels:
            channel.close()
    assert server.process.returncode == 0
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    # The format of every log line (issue 25: audit lines had `time`, no level or logger).
    for entry in entries:
        assert {"timestamp", "level", "logger", "message", "pid"} <= entry.keys(), entry
        assert (entry["level"], entry["logger"]) == ("INFO", "entitlements.audit"), entry
        assert "time" not in entry

    recorded = {e["request_id"]: (e["principal"], e["outcome"]) for e in entries if e["principal"]}
    assert recorded.keys() == expected.keys()
    for request_id, (who, outcome) in expected.items():
        assert recorded[request_id] == (who, outcome)
    assert {outcome for _, outcome in expected.values()} == {
        "OK",
        "PERMISSION_DENIED",
        "NOT_FOUND",
    }

    one_by_one = [e for e in entries if e["principal"] is None and "calls" not in e]
    summaries = [e for e in entries if "calls" in e]
    # Bounded: per worker process, a few records and one summary per method.
    assert len(one_by_one) <= workers * ANONYMOUS_RECORDS_PER_INTERVAL
    assert len(summaries) <= workers * 2
    assert all(e["outcome"] == "UNAUTHENTICATED" for e in one_by_one + summaries)
    # And nothing unaccounted for: every refused call is in a record or a count.
    counted = Counter[str]()
    for entry in one_by_one:
        counted[entry["method"]] += 1
    for entry in summaries:
        counted[entry["method"]] += entry["calls"]
        assert re.fullmatch(
            rf"{entry['calls']} more unauthenticated calls to {entry['method']} refused in "
            r"the last [\d.]+ s \(not recorded one by one\)",
            entry["summary"],
        ), entry
    assert counted == anonymous


def test_a_summary_is_written_when_its_interval_ends(caplog: pytest.LogCaptureFixture) -> None:
    """Without a further call nor a stop: the interval's timer writes the counts; the next
    interval records its first calls one by one again."""
    logger = logging.getLogger("tests.audit.interval")
    caplog.set_level(logging.INFO, logger=logger.name)
    audit = AuditLog(logger, anonymous_records_per_interval=3, anonymous_interval_seconds=0.3)

    def refused(count: int, method: str = f"/{GRANT}") -> None:
        for _ in range(count):
            audit.record(
                method=method,
                principal=None,
                role=None,
                request=grant("r"),
                outcome=grpc.StatusCode.UNAUTHENTICATED,
                started=time.monotonic(),
            )

    def lines() -> list[dict[str, Any]]:
        return [
            json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == logger.name
        ]

    refused(10)
    refused(2, f"/{REVOKE}")
    assert len(lines()) == 3  # the first three, one by one
    eventually(lambda: len(lines()) >= 5, 5, 0.05)
    summaries = lines()[3:]
    assert [(s["method"], s["calls"]) for s in summaries] == [(GRANT, 7), (REVOKE, 2)]
    assert summaries[0]["summary"].startswith(f"7 more unauthenticated calls to {GRANT} refused")
    refused(4)  # a new interval
    assert len(lines()) == 5 + 3
    audit.flush()
    assert lines()[-1]["calls"] == 1
    # An admin call is always recorded, whatever the anonymous ones did.
    audit.record(
        method=f"/{GRANT}",
        principal="test-admin",
        role="admin",
        request=grant("admin-1"),
        outcome=grpc.StatusCode.OK,
        started=time.monotonic(),
    )
    assert lines()[-1]["request_id"] == "admin-1"


def test_an_audit_line_has_the_format_of_every_log_line() -> None:
    """timestamp, level, logger, message, pid, and the call's request_id and trace_id
    (set by the guard while it serves a traced call), then the audit fields."""
    # As `serve` writes them: formatted by the handler, in the call's context.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.audit.format")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    audit = AuditLog(logger)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"

    def call() -> None:
        trace_id_var.set(trace_id)
        audit.record(
            method="/" + GRANT,
            principal="test-admin",
            role="admin",
            request=grant("fmt-1"),
            outcome=grpc.StatusCode.OK,
            started=time.monotonic(),
        )

    contextvars.copy_context().run(call)
    logger.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "test.audit.format"
    assert entry["message"] == f"{GRANT} by test-admin: OK"
    assert entry["trace_id"] == trace_id
    assert entry["request_id"] == "fmt-1"
    assert (entry["principal"], entry["role"], entry["method"]) == ("test-admin", "admin", GRANT)
    assert entry["outcome"] == "OK"
    assert entry["duration_ms"] >= 0
    assert entry["pid"] > 0
    datetime.fromisoformat(entry["timestamp"])
    assert list(entry)[:3] == ["timestamp", "level", "logger"]
