"""OpenTelemetry tracing, switched on by `Settings.tracing` ("console" or "otlp"; "off",
the default, imports none of this and installs no wrapper).

On, the RPC guard (service.grpc_api.guard) wraps each method of our services in
`RpcTracing.wrap`: a SERVER span per call named after the method ("package.Service/Method"),
whose parent is the caller's W3C `traceparent` (and `tracestate`) metadata, with the
attributes rpc.system, rpc.service, rpc.method and rpc.grpc.status_code. The span is the
current one while the call runs, so work under it nests: the store calls (run in a copy
of the caller's context, service.usecases.store_calls) see it, and so do the spans
google-cloud-spanner starts on the global tracer provider, which `tracer_provider`
installs.

The use cases know nothing of OpenTelemetry: the store-call observer hook
(StoreCallObserver) is told of each store call when it ends, and `TracingStoreObserver`
turns that into a child span `store.<operation>` with the call's start and end times, and
marks the RPC's span `cache.hit = false` when the call was a read (`load`), the store
read of a cache miss.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Mapping
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from storage.observers import StoreCallObserver

SERVICE_NAME = "entitlement-offer-service"
TRACER_NAME = "service.grpc_api"
# The store read of a cache miss (service.usecases.reads loads a user's state).
READ_OPERATIONS = frozenset({"load"})
# The codes OpenTelemetry's semantic conventions count as a server span's error.
SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

_PROPAGATOR = TraceContextTextMapPropagator()
# The process's provider for "console"/"otlp" (the global one: set once per process).
_installed: TracerProvider | None = None


class _MetadataGetter(Getter[Collection[tuple[str, Any]]]):
    """Reads the propagation headers from gRPC invocation metadata (key, value) pairs."""

    def get(self, carrier: Collection[tuple[str, Any]], key: str) -> list[str] | None:
        values = [str(value) for name, value in carrier if name == key]
        return values or None

    def keys(self, carrier: Collection[tuple[str, Any]]) -> list[str]:
        return [name for name, _ in carrier]


_GETTER = _MetadataGetter()


def exporter_for(mode: str) -> SpanExporter:
    if mode == "console":
        return ConsoleSpanExporter()
    if mode == "otlp":
        # Endpoint, headers, TLS from the standard OTEL_EXPORTER_OTLP_* variables.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    raise ValueError(f"no span exporter for tracing mode {mode!r}")


def tracer_provider(mode: str) -> TracerProvider:
    """The process's tracer provider: the global one when the process has configured
    one, else one for `mode` (batching spans to its exporter), made the global one (so the
    spans of google-cloud-spanner join ours) on first use."""
    global _installed
    configured = trace.get_tracer_provider()
    if _installed is None and isinstance(configured, TracerProvider):
        # The process already has one (opentelemetry-instrument, an embedding program):
        # use it, so ours and Spanner's spans go to the same place.
        _installed = configured
    if _installed is None:
        # service.name: OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES win over this.
        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        provider.add_span_processor(BatchSpanProcessor(exporter_for(mode)))
        trace.set_tracer_provider(provider)
        _installed = provider
    return _installed


class RpcTracing:
    def __init__(self, provider: trace.TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer(TRACER_NAME)

    def attributes_of(self, method: str) -> dict[str, str]:
        service, _, name = method.lstrip("/").partition("/")
        return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

    def parent_of(self, metadata: Collection[tuple[str, Any]] | None) -> Context | None:
        """The caller's span context from `traceparent`, or None (a root span)."""
        if not metadata:
            return None
        return _PROPAGATOR.extract(metadata, getter=_GETTER)

    def store_observer(self, inner: StoreCallObserver | None, backend: str) -> TracingStoreObserver:
        return TracingStoreObserver(self.tracer, inner, backend)

    def flush(self, timeout_seconds: float = 2.0) -> None:
        """Exports the spans still batched (on stop), waiting at most `timeout_seconds`:
        the SDK's force_flush ignores its timeout and retries an unreachable collector for
        up to OTEL_EXPORTER_OTLP_TIMEOUT, which must not hold the shutdown."""
        flush = getattr(self.provider, "force_flush", None)
        if flush is not None:
            flusher = threading.Thread(target=flush, name="span-flush", daemon=True)
            flusher.start()
            flusher.join(timeout_seconds)


def end_rpc_span(span: trace.Span, code: grpc.StatusCode) -> None:
    value = code.value[0] if isinstance(code.value, tuple) else code.value
    span.set_attribute("rpc.grpc.status_code", int(value))
    if code in SERVER_ERROR_CODES:
        span.set_status(Status(StatusCode.ERROR, code.name))


class TracingStoreObserver:
    """A StoreCallObserver: a child span per store call, under the span current where the
    call was awaited (the RPC's; for a single-flight read, that of the RPC that began it),
    then the observer it wraps (the metrics), if any."""

    def __init__(self, tracer: trace.Tracer, inner: StoreCallObserver | None, backend: str):
        self._tracer = tracer
        self._inner = inner
        self._attributes: Mapping[str, str] = {"store.backend": backend}

    def store_call(self, operation: str, seconds: float, error: BaseException | None) -> None:
        if self._inner is not None:
            self._inner.store_call(operation, seconds, error)
        parent = trace.get_current_span()
        if not parent.is_recording():  # no RPC span (readiness probes) or it has ended
            return
        if operation in READ_OPERATIONS:
            parent.set_attribute("cache.hit", False)
        ended = time.time_ns()
        span = self._tracer.start_span(
            f"store.{operation}",
            kind=SpanKind.CLIENT,
            attributes={**self._attributes, "store.operation": operation},
            start_time=ended - int(seconds * 1e9),
        )
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end(end_time=ended)

    def transaction_aborted(self, backend: str) -> None:
        if self._inner is not None:
            self._inner.transaction_aborted(backend)
