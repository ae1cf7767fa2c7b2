"""OpenTelemetry tracing through a real in-process server on loopback, its spans caught by
an in-memory exporter: a span per RPC, child of the caller's traceparent, with the gRPC
attributes and status, a child span for the store read of a cache miss; and none at all
(no wrapper) when tracing is off, the default."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import entitlement_service_pb2_grpc
from service.config import Settings, SettingsError
from service.domain.account import UserState
from service.grpc_api.auth import bearer_metadata
from service.grpc_api.logs import JsonFormatter
from service.grpc_api.server import RunningServer, start_server
from storage.faults import FaultInjectingRepository
from storage.sqlite import SqliteRepository
from tests.support.harness import SERVICE_TOKEN, write_test_credentials

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_SPAN_ID:016x}-01"
GET_ENTITLEMENT = "entitlements.v1.EntitlementService/GetEntitlement"


@dataclasses.dataclass
class Traced:
    running: RunningServer
    exporter: InMemorySpanExporter
    stub: entitlement_service_pb2_grpc.EntitlementServiceStub

    def get(self, user_id: str, *metadata: tuple[str, str], token: bool = True) -> None:
        auth = bearer_metadata(SERVICE_TOKEN) if token else ()
        self.stub.GetEntitlement(
            es.GetEntitlementRequest(user_id=user_id, feature_id="offline_downloads"),
            metadata=(*auth, *metadata),
            timeout=5,
        )

    def spans(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if span.name == name]

    def ended(self, name: str) -> list[ReadableSpan]:
        """The spans `name` once one has ended: grpc.aio sends an aborted call's status
        from inside context.abort, so the caller may see it before the span ends."""
        deadline = time.monotonic() + 5
        while not self.spans(name) and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.spans(name)


@contextmanager
def traced_server(tmp_path: Path, tracing: str) -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = Settings(
        host="127.0.0.1",
        port=0,
        credentials_file=write_test_credentials(tmp_path / "credentials.yaml"),
        tracing=tracing,
    )
    running = start_server(
        settings, repository=SqliteRepository(tmp_path / "t.db"), tracer_provider=provider
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield Traced(
            running, exporter, entitlement_service_pb2_grpc.EntitlementServiceStub(channel)
        )
    finally:
        channel.close()
        running.stop(grace_seconds=1)
        provider.shutdown()


def test_a_span_per_rpc_child_of_the_callers_traceparent(tmp_path: Path) -> None:
    with traced_server(tmp_path, "console") as server:
        server.get("traced-user", ("traceparent", TRACEPARENT))
        (span,) = server.spans(GET_ENTITLEMENT)
        assert span.kind is SpanKind.SERVER
        assert span.context is not None
        assert span.context.trace_id == TRACE_ID
        assert span.parent is not None
        assert span.parent.is_remote
        assert (span.parent.trace_id, span.parent.span_id) == (TRACE_ID, PARENT_SPAN_ID)
        assert dict(span.attributes or {}) == {
            "rpc.system": "grpc",
            "rpc.service": "entitlements.v1.EntitlementService",
            "rpc.method": "GetEntitlement",
            "rpc.grpc.status_code": 0,
            "cache.hit": False,  # the first read of the user missed the cache
        }
        assert span.status.status_code is StatusCode.UNSET
        # The store read of the miss: a child span of the RPC's.
        (load,) = server.spans("store.load")
        assert load.parent is not None
        assert load.parent.span_id == span.context.span_id
        assert load.context is not None
        assert load.context.trace_id == TRACE_ID
        assert dict(load.attributes or {}) == {
            "store.backend": "sqlite",
            "store.operation": "load",
        }
        assert span.start_time is not None
        assert load.start_time is not None
        assert span.start_time <= load.start_time

        # Read again: answered from the cache, no store span, no cache miss.
        server.exporter.clear()
        server.get("traced-user")
        (hit,) = server.spans(GET_ENTITLEMENT)
        assert hit.parent is None  # no traceparent: a root span
        assert "cache.hit" not in (hit.attributes or {})
        assert server.spans("store.load") == []


def test_the_span_carries_the_status_of_a_refused_call(tmp_path: Path) -> None:
    with traced_server(tmp_path, "console") as server:
        with pytest.raises(grpc.RpcError) as refused:
            server.get("anyone", ("traceparent", TRACEPARENT), token=False)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        (span,) = server.ended(GET_ENTITLEMENT)
        assert span.context is not None
        assert span.context.trace_id == TRACE_ID
        assert (span.attributes or {})["rpc.grpc.status_code"] == 16  # UNAUTHENTICATED
        # A caller's error is not the server's (OpenTelemetry's gRPC conventions).
        assert span.status.status_code is StatusCode.UNSET


def test_no_span_and_no_wrapper_when_tracing_is_off(tmp_path: Path) -> None:
    with traced_server(tmp_path, "off") as server:
        server.get("untraced-user", ("traceparent", TRACEPARENT))
        assert server.exporter.get_finished_spans() == ()
        assert server.running.app.observers.tracing is None
        assert server.running.guard is not None
        assert server.running.guard._tracing is None
        assert server.running.app.store_calls.observer is None


def test_the_tracing_setting() -> None:
    assert Settings().tracing == "off"
    assert Settings.load({"ENTITLEMENTS_TRACING": "otlp"}).tracing == "otlp"
    with pytest.raises(SettingsError, match="tracing must be one of off, console, otlp"):
        Settings(tracing="jaeger")


class _Captured(logging.Handler):
    """Formats each record as it is emitted (in the context of the code that logs)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class _LoggingStore(FaultInjectingRepository):
    """The real SQLite store, saying when it loads (from the store thread)."""

    def load(self, user_id: str, *, min_version: int = 0, stale_ok: bool = False) -> UserState:
        logging.getLogger("tests.store").info("loading a user")
        return super().load(user_id, min_version=min_version, stale_ok=stale_ok)


def test_log_lines_of_a_traced_call_carry_its_trace_id(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = Settings(
        host="127.0.0.1",
        port=0,
        credentials_file=write_test_credentials(tmp_path / "credentials.yaml"),
        tracing="console",
    )
    store = _LoggingStore(SqliteRepository(tmp_path / "logs.db"))
    running = start_server(settings, repository=store, tracer_provider=provider)
    captured = _Captured()
    logger = logging.getLogger("tests.store")
    logger.addHandler(captured)
    logger.setLevel(logging.INFO)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            entitlement_service_pb2_grpc.EntitlementServiceStub(channel).GetEntitlement(
                es.GetEntitlementRequest(user_id="logged-user", feature_id="offline_downloads"),
                metadata=(*bearer_metadata(SERVICE_TOKEN), ("traceparent", TRACEPARENT)),
                timeout=5,
            )
    finally:
        logger.removeHandler(captured)
        running.stop(grace_seconds=1)
        provider.shutdown()
    (line,) = [json.loads(line) for line in captured.lines if "loading a user" in line]
    assert line["trace_id"] == f"{TRACE_ID:032x}"
