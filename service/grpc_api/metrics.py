"""Prometheus metrics, summed across the worker processes of `entitlements serve`.

prometheus-client's multi-process mode (service.grpc_api.metrics_process): the supervisor
sets PROMETHEUS_MULTIPROC_DIR to a fresh folder before it forks the workers; every process
writes its values to memory-mapped files there, and the supervisor serves /metrics on
`metrics_port`, adding the files up (MultiProcessCollector). A worker that dies is marked
dead (its live gauges leave the sum; its counters stay in it, as counters must).

Where the values come from, so that the hot paths pay little:
- the RPC guard counts and times every RPC of our services (grpc_server_*), with the
  label children resolved once per method at registration;
- the store pool (StoreCalls) tells a StoreMetrics observer each call's latency and error;
- the counts the use cases keep as plain integers (cache hits, misses, stale answers,
  evictions, single-flight waits) and the guard's shed count are copied into the
  metrics every SYNC_SECONDS by WorkerMetrics, which also sets the gauges (cache entries,
  store readiness): the cache-hit path makes no metrics call for them;
- Spanner's aborted transactions come through the same observer: the backend tells the
  observer of the store call it serves (storage.observers; storage imports nothing of
  this module).

Names follow the conventional gRPC server metrics (grpc_server_started_total,
grpc_server_handled_total, grpc_server_handling_seconds) and entitlements_* for the rest;
docs/ and deploy/ (alerts, dashboard) use exactly these names.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import grpc
from prometheus_client import (
    Counter,
    Gauge,
    Histogram,
)

from service.domain.errors import DomainError

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Fine below 1 ms: a cache hit is answered in well under a millisecond.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
)  # fmt: skip
# The event loop's lag: fine around the 5 ms shedding target, up to the 0.5 s a probe
# caller's deadline allows.
LOOP_LAG_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
)  # fmt: skip
# How often a worker copies its use-case counts into the metrics (and on stop).
SYNC_SECONDS = 1.0
GRPC_TYPE = "unary"
STREAM_GRPC_TYPE = "server_stream"  # WatchEntitlements, WatchChanges
# A server stream lives from seconds to hours (a watch until its caller leaves, or the
# connection's max age rotates it).
STREAM_BUCKETS = (1, 10, 30, 60, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)


def build_version() -> str:
    try:
        return metadata.version("entitlement-offer-service")
    except metadata.PackageNotFoundError:  # pragma: no cover - not installed
        return "unknown"


class Metrics:
    """Every metric of a process (one instance per process: see metrics())."""

    def __init__(self) -> None:
        rpc_labels = ("grpc_service", "grpc_method", "grpc_type")
        self.started = Counter(
            "grpc_server_started_total", "RPCs started on the server.", rpc_labels
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, whatever their status.",
            (*rpc_labels, "grpc_code"),
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Time from the RPC reaching our code to its answer.",
            rpc_labels,
            buckets=LATENCY_BUCKETS,
        )
        # Apart from grpc_server_handling_seconds, whose buckets (and latency SLO) are
        # the unary calls'.
        self.stream_duration = Histogram(
            "grpc_server_stream_duration_seconds",
            "Time a server stream was open: from reaching our code to its end.",
            rpc_labels,
            buckets=STREAM_BUCKETS,
        )
        self.cache_lookups = Counter(
            "entitlements_cache_lookups",
            "User state cache lookups: hit, miss, or stale (served past freshness because "
            "the store failed).",
            ("result",),
        )
        self.cache_entries = Gauge(
            "entitlements_cache_entries",
            "Users in the state caches (all workers).",
            multiprocess_mode="livesum",
        )
        self.cache_evictions = Counter(
            "entitlements_cache_evictions", "Cache entries evicted to make room."
        )
        self.single_flight_waits = Counter(
            "entitlements_single_flight_waits",
            "Cache misses that shared another caller's store read instead of starting one.",
        )
        self.rpcs_shed = Counter(
            "entitlements_rpcs_shed",
            "RPCs refused RESOURCE_EXHAUSTED before any work: reason queue_delay (the worker's "
            "event loop lag above its target for an interval) or in_flight (a worker had "
            "max_concurrent_rpcs in flight).",
            ("reason",),
        )
        self.rpcs_expired = Counter(
            "entitlements_rpcs_expired",
            "RPCs whose deadline had passed when their handler started (they waited it out "
            "in the queue), dropped DEADLINE_EXCEEDED.",
        )
        self.loop_lag = Histogram(
            "entitlements_event_loop_lag_seconds",
            "How late a worker's event loop woke a probe asking to wake every 10 ms: the "
            "queueing delay of a call waiting for the loop (service/grpc_api/overload.py).",
            buckets=LOOP_LAG_BUCKETS,
        )
        self.store_call_seconds = Histogram(
            "entitlements_store_call_seconds",
            "Duration of blocking store calls (in the store thread pool).",
            ("backend", "operation"),
            buckets=LATENCY_BUCKETS,
        )
        self.store_errors = Counter(
            "entitlements_store_errors",
            "Store calls that failed: kind is the error (StoreUnavailable, DeadlineExceeded, ...).",
            ("backend", "operation", "kind"),
        )
        self.spanner_aborts = Counter(
            "entitlements_spanner_transaction_aborts",
            "Spanner read-write transactions aborted and re-run.",
        )
        # livemin, not min: a dead worker's last value must leave the minimum (the
        # conventional "min" would keep a dead worker's 0 there for good).
        self.store_ready = Gauge(
            "entitlements_store_ready",
            "1 when the store can serve (reads and writes), per worker; the minimum over "
            "live workers.",
            multiprocess_mode="livemin",
        )
        self.watch_streams = Gauge(
            "entitlements_watch_streams_open",
            "WatchEntitlements streams open (all workers).",
            multiprocess_mode="livesum",
        )
        self.change_streams = Gauge(
            "entitlements_change_streams_open",
            "WatchChanges streams open: callers' near caches following (all workers).",
            multiprocess_mode="livesum",
        )
        self.change_stream_resets = Counter(
            "entitlements_change_stream_resets_total",
            "WatchChanges messages telling a caller to drop its whole near cache (a feed gap, "
            "a position that could not be resumed, a stream that fell behind).",
        )
        self.feed_lag = Gauge(
            "entitlements_feed_lag_seconds",
            "Seconds since a worker last read the store's change feed; the maximum over "
            "live workers (a worker this far behind may serve other workers' writes late).",
            multiprocess_mode="livemax",
        )
        self.feed_changes = Counter(
            "entitlements_feed_changes",
            "Changes read from the store's change feed (summed over workers).",
        )
        self.feed_resets = Counter(
            "entitlements_feed_cache_resets",
            "Whole-cache expirations: the feed had a gap, or was lost (once per poll while lost).",
            ("reason",),
        )
        self.catalog_info = Gauge(
            "entitlements_catalog_info",
            "The catalog version the workers serve (value 1).",
            ("version",),
            multiprocess_mode="livemax",
        )


class SupervisorMetrics:
    """The metrics of the supervising process. Kept apart from the workers' (Metrics): an
    unlabelled gauge exists, at 0, in every process that makes it, and the supervisor's 0
    would pin entitlements_store_ready's minimum."""

    def __init__(self) -> None:
        self.worker_restarts = Counter(
            "entitlements_worker_restarts", "Worker processes replaced by the supervisor."
        )
        self.build_info = Gauge(
            "entitlements_build_info",
            "The service's version (value 1).",
            ("version",),
            multiprocess_mode="livemax",
        )


_metrics: Metrics | None = None
_metrics_lock = threading.Lock()
_feed_reads: Counter | None = None


def feed_reads() -> Counter:
    """Store reads of the change feed: by each worker when it reads the store's feed
    itself (one worker), else by the pod's one relay process (service.grpc_api.
    feed_reader). Apart from Metrics, so that the relay makes only this metric (its
    unlabelled gauges at 0 would pin the workers' minimums)."""
    global _feed_reads
    with _metrics_lock:
        if _feed_reads is None:
            _feed_reads = Counter(
                "entitlements_feed_reads",
                "Store reads of the change feed (one reader per pod: grows with pods, not "
                "with workers).",
            )
        return _feed_reads


def metrics() -> Metrics:
    """A worker's metrics, made on first use in the worker (after prepare_multiprocess,
    when it is called at all); each process writes its own files."""
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            _metrics = Metrics()
        return _metrics


_supervisor_metrics: SupervisorMetrics | None = None


def supervisor_metrics() -> SupervisorMetrics:
    """The supervising process's metrics (see SupervisorMetrics)."""
    global _supervisor_metrics
    with _metrics_lock:
        if _supervisor_metrics is None:
            _supervisor_metrics = SupervisorMetrics()
        return _supervisor_metrics


# --- the RPCs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MethodMetrics:
    """The label children of one method, resolved once (labels() costs a dict lookup
    and a lock per call)."""

    started: Callable[[], None]
    observe: Callable[[float], None]
    handled: Callable[[grpc.StatusCode], None]


class RpcMetrics:
    """What the RPC guard counts (service.grpc_api.guard.RpcObserver)."""

    def __init__(self, registry: Metrics | None = None) -> None:
        self._metrics = registry or metrics()

    def for_method(self, method: str) -> MethodMetrics:
        """`method` is "/package.Service/Method"."""
        return self._for(method, GRPC_TYPE, self._metrics.handling)

    def for_stream(self, method: str) -> MethodMetrics:
        """A server stream: started and handled as the unary calls (grpc_type
        server_stream), its duration in grpc_server_stream_duration_seconds."""
        return self._for(method, STREAM_GRPC_TYPE, self._metrics.stream_duration)

    def _for(self, method: str, grpc_type: str, seconds: Histogram) -> MethodMetrics:
        service, _, name = method.lstrip("/").rpartition("/")
        labels = (service, name, grpc_type)
        handled = self._metrics.handled
        by_code: dict[grpc.StatusCode, Any] = {}

        def count_handled(code: grpc.StatusCode) -> None:
            child = by_code.get(code)
            if child is None:
                child = by_code[code] = handled.labels(*labels, code.name)
            child.inc()

        return MethodMetrics(
            started=self._metrics.started.labels(*labels).inc,
            observe=seconds.labels(*labels).observe,
            handled=count_handled,
        )


# --- the store --------------------------------------------------------------------------


class StoreMetrics:
    """Observes every store call and the aborts in it (storage.observers.StoreCallObserver)."""

    def __init__(self, backend: str, registry: Metrics | None = None) -> None:
        self._backend = backend
        self._metrics = registry or metrics()
        self._latency: dict[str, Any] = {}

    def store_call(self, operation: str, seconds: float, error: BaseException | None) -> None:
        latency = self._latency.get(operation)
        if latency is None:
            latency = self._latency[operation] = self._metrics.store_call_seconds.labels(
                self._backend, operation
            )
        latency.observe(seconds)
        if error is not None and not isinstance(error, DomainError | asyncio.CancelledError):
            # A refused write (DomainError) is the request's fault, not the store's; a
            # cancelled call is the caller's going away.
            self._metrics.store_errors.labels(self._backend, operation, type(error).__name__).inc()

    def transaction_aborted(self, backend: str) -> None:
        if backend == "spanner":
            self._metrics.spanner_aborts.inc()


# --- the counts of the use cases, copied now and then --------------------------------------


class WorkerMetrics:
    """Copies a worker's counts into the metrics every SYNC_SECONDS (and once more when
    it stops): cache lookups, evictions and entries, single-flight waits, RPCs shed (by
    reason) and expired,
    store readiness and the change feed's lag and resets. Runs on the worker's event
    loop."""

    def __init__(
        self,
        *,
        cache_stats: Callable[[], Any],
        cache_entries: Callable[[], int],
        single_flight_waits: Callable[[], int],
        rpcs_shed: Callable[[], int],
        store_ready: Callable[[], bool],
        catalog_version: str,
        feed_stats: Callable[[], Any] | None = None,
        watch_streams: Callable[[], int] | None = None,
        change_streams: Callable[[], Any] | None = None,
        rpcs_shed_queue_delay: Callable[[], int] = lambda: 0,
        rpcs_expired: Callable[[], int] = lambda: 0,
        registry: Metrics | None = None,
    ) -> None:
        self._metrics = m = registry or metrics()
        self._cache_stats = cache_stats
        self._cache_entries = cache_entries
        self._single_flight_waits = single_flight_waits
        self._rpcs_shed = rpcs_shed
        self._rpcs_shed_queue_delay = rpcs_shed_queue_delay
        self._rpcs_expired = rpcs_expired
        self._store_ready = store_ready
        # The FeedStats of service.usecases.freshness (None: the store has no feed).
        self._feed_stats = feed_stats
        self._watch_streams = watch_streams
        # The ChangeStreams of service.usecases.change_streams (None: not counted).
        self._change_streams = change_streams
        self._copied: dict[str, int] = {}
        self._counters: dict[str, Any] = {
            "hits": m.cache_lookups.labels("hit"),
            "misses": m.cache_lookups.labels("miss"),
            "stale": m.cache_lookups.labels("stale"),
            "evictions": m.cache_evictions,
            "waits": m.single_flight_waits,
            "shed": m.rpcs_shed.labels("in_flight"),
            "shed_queue_delay": m.rpcs_shed.labels("queue_delay"),
            "expired": m.rpcs_expired,
            "feed_changes": m.feed_changes,
            "feed_gaps": m.feed_resets.labels("gap"),
            "feed_lost": m.feed_resets.labels("lost"),
            "feed_reads": feed_reads(),
            "change_stream_resets": m.change_stream_resets,
        }
        m.catalog_info.labels(catalog_version).set(1)
        self._task: asyncio.Task[None] | None = None

    def sync(self) -> None:
        stats = self._cache_stats()
        counts = {
            "hits": stats.hits,
            "misses": stats.misses,
            "stale": stats.stale_served,
            "evictions": stats.evictions,
            "waits": self._single_flight_waits(),
            "shed": self._rpcs_shed(),
            "shed_queue_delay": self._rpcs_shed_queue_delay(),
            "expired": self._rpcs_expired(),
        }
        if self._feed_stats is not None:
            feed = self._feed_stats()
            counts.update(
                feed_changes=feed.changes,
                feed_gaps=feed.gaps,
                feed_lost=feed.lost_expirations,
                feed_reads=feed.store_reads,
            )
            self._metrics.feed_lag.set(min(feed.lag_seconds(), 1e9))
        if self._change_streams is not None:
            streams = self._change_streams()
            counts["change_stream_resets"] = streams.resets_sent
            self._metrics.change_streams.set(streams.open_streams)
        for name, count in counts.items():
            delta = count - self._copied.get(name, 0)
            if delta > 0:
                self._counters[name].inc(delta)
                self._copied[name] = count
        self._metrics.cache_entries.set(self._cache_entries())
        if self._watch_streams is not None:
            self._metrics.watch_streams.set(self._watch_streams())
        self._metrics.store_ready.set(1 if self._store_ready() else 0)

    def start(self) -> None:
        self.sync()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="metrics")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.sync()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SYNC_SECONDS)
            try:
                self.sync()
            except Exception:  # never let metrics end a worker
                log.exception("cannot update the metrics")
