"""The supervisor's side of the metrics: prometheus-client's multi-process mode and the
HTTP endpoint that sums every process's values (service.grpc_api.metrics has the metrics
themselves, and why they are summed across processes)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import prometheus_client
from prometheus_client import CollectorRegistry, multiprocess, values

from service.grpc_api.metrics import MULTIPROC_ENV, build_version, supervisor_metrics


def prepare_multiprocess() -> Path:
    """Points prometheus-client at a fresh, empty folder for this server's processes (call
    in the supervisor before any worker forks, and before any metric is made)."""
    folder = Path(tempfile.mkdtemp(prefix="entitlements-metrics-"))
    os.environ[MULTIPROC_ENV] = str(folder)
    # The value class is chosen when prometheus_client is imported: choose again, in
    # case it was imported before the variable was set.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return folder


def cleanup_multiprocess(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    if os.environ.get(MULTIPROC_ENV) == str(folder):
        del os.environ[MULTIPROC_ENV]


def mark_worker_dead(pid: int) -> None:
    """A worker exited: its live gauges (cache entries, readiness, catalog) leave the sums."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class MetricsEndpoint:
    """The HTTP endpoint (/metrics) the supervisor serves, summing every process's files."""

    def __init__(self, host: str, port: int) -> None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        address = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        self._server, self._thread = prometheus_client.start_http_server(
            port, addr=address, registry=registry
        )
        self.port: int = self._server.server_port
        supervisor_metrics().build_info.labels(build_version()).set(1)

    def close_in_child(self) -> None:
        """In a forked worker: closes its copy of the listening socket (the supervisor's
        thread answers; a worker must not hold the port)."""
        self._server.socket.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# The supervisor's endpoint, closed in forked workers (service.grpc_api.workers).
_endpoint: MetricsEndpoint | None = None


def start_endpoint(host: str, port: int) -> MetricsEndpoint:
    global _endpoint
    _endpoint = MetricsEndpoint(host, port)
    return _endpoint


def close_inherited_endpoint() -> None:
    """In a forked worker: lets go of the supervisor's endpoint socket."""
    global _endpoint
    if _endpoint is not None:
        _endpoint.close_in_child()
        _endpoint = None
