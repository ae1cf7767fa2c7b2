"""Serving with N worker processes on one port (SO_REUSEPORT), supervised.

Python runs one core per process, so a machine's cores are used by several workers, each
a full server with its own cache and store connections. Workers are forked before any
gRPC, SQLite or Spanner object exists in the parent (forking a running gRPC server is
unsupported), which only supervises: a worker that dies is logged and replaced, and
SIGTERM or SIGINT to the parent drains every worker (each stops gracefully) before the
parent exits 0. With several workers on a shared store, the supervisor also runs the
pod's one reader of the store's change feed (service.grpc_api.feed_reader), which the
workers follow instead of the store. The kernel balances connections (not RPCs) across
the workers' listening sockets, so clients need several connections, and a maximum
connection age makes long-lived clients rebalance.

The port is claimed by the parent before anything starts (claim_port): `serve` refuses a
port that anything else listens on or holds, instead of silently sharing it with another
server through SO_REUSEPORT. The claim stays bound (not listening) while the server runs,
so the port stays ours while workers are replaced.

A worker that dies after it served is replaced at once. When it was killed from outside
(SIGKILL: kill -9, the OOM killer) or had served for QUICK_DEATH_SECONDS, that is the
world happening to it, and it is replaced however often. A replacement that fails to start
(the store locked for a moment, say) is retried with backoff; the supervisor gives up,
stopping every worker, only when failed starts and quick crashes happen more than
MAX_RESTARTS times in RESTART_WINDOW_SECONDS (a crash loop). Meanwhile the other workers
keep serving.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import ForkProcess
from typing import TYPE_CHECKING

from service.catalog import CatalogError
from service.config import Settings, SettingsError
from service.domain.errors import StoreError
from service.grpc_api.audit import flush_audit_summaries
from service.grpc_api.auth import CredentialsError
from service.grpc_api.child_process import STOP_SIGNALS, describe_error, stop_when_parent_dies
from service.grpc_api.cpus import available_cpus
from service.grpc_api.feed_reader import FeedReader, FeedReaderStartError, relay_wanted
from service.grpc_api.ports import AddressUnavailable, claim_port
from storage.urls import UnsupportedStorageUrl

if TYPE_CHECKING:
    from service.grpc_api.server import RunningServer
    from service.ingestion.runner import RunningIngress

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_SECONDS = 60.0
# A worker failing to start (or dying right after it started) more often than this is a
# crash loop: the supervisor gives up. A worker that died after serving a while does not
# count (a kill -9 loop must not stop the server).
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 30.0
QUICK_DEATH_SECONDS = 2.0
# A replacement that failed to start is retried after this delay, doubled on each
# further failure up to the maximum (a worker that died while serving is replaced at once).
RESTART_BACKOFF_SECONDS = 0.25
MAX_RESTART_BACKOFF_SECONDS = 4.0
# How often the supervisor looks at its workers.
POLL_SECONDS = 0.1

# Start-up failures a worker reports in one line (anything else is a bug: traceback too).
EXPECTED_START_ERRORS = (
    CatalogError,
    CredentialsError,
    SettingsError,
    UnsupportedStorageUrl,
    StoreError,
    OSError,
)

Announce = Callable[[str], None]


class WorkerStartError(Exception):
    """A worker failed to start when the server started: the server does not start."""


def worker_count(settings: Settings) -> int:
    return settings.workers if settings.workers > 0 else available_cpus()


def serve(settings: Settings, announce: Announce) -> int:
    """Serves until SIGTERM or SIGINT; returns the exit status."""
    # Block the stop signals before anything starts threads (they inherit the mask) and
    # wait for them synchronously: a handler-based wait can sleep through a signal the
    # kernel delivered to another thread.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    claim = claim_port(settings.host, settings.port)
    endpoint = folder = None
    notifications_claim: socket.socket | None = None
    try:
        settings = dataclasses.replace(settings, port=claim.getsockname()[1])
        if settings.notifications_port:
            # Claimed like the gRPC port: the workers' listeners join it (SO_REUSEPORT).
            notifications_claim = claim_port(settings.host, settings.notifications_port)
        if settings.metrics_port:
            # Before any worker forks and any metric exists: every process writes its
            # values to `folder`, and this one serves their sum.
            from service.grpc_api import metrics_process as metrics

            folder = metrics.prepare_multiprocess()
            try:
                endpoint = metrics.start_endpoint(settings.host, settings.metrics_port)
            except OSError as error:
                raise AddressUnavailable(
                    f"cannot serve metrics on {settings.host}:{settings.metrics_port}: "
                    f"{error.strerror or error}"
                ) from error
            announce(f"metrics on http://{settings.host}:{endpoint.port}/metrics")
        workers = worker_count(settings)
        if workers == 1:
            return _serve_in_process(settings, announce)
        return Supervisor(settings, workers).run(announce, claim)
    finally:
        claim.close()
        if notifications_claim is not None:
            notifications_claim.close()
        if endpoint is not None:
            endpoint.close()
        if folder is not None:
            from service.grpc_api.metrics_process import cleanup_multiprocess

            cleanup_multiprocess(folder)


def _serve_in_process(settings: Settings, announce: Announce) -> int:
    from service.grpc_api.server import start_server

    running = start_server(settings)
    ingress = _start_ingress(settings, running)
    announce(
        f"serving on {settings.host}:{running.port} (1 worker, pid {os.getpid()}; "
        f"catalog {running.reads.catalog.version})"
    )
    if ingress is not None and ingress.port:
        announce(f"store notifications on http://{settings.host}:{ingress.port}")
    received = signal.sigwait(STOP_SIGNALS)
    announce(f"{signal.Signals(received).name}: draining")
    _drain_and_stop(settings, running, ingress)
    flush_audit_summaries()
    return 0


def _worker_main(
    settings: Settings,
    report: Connection,
    claim: socket.socket | None,
    feed_relay: str | None = None,
) -> None:
    """Runs in a forked child, with the stop signals still blocked (inherited). Reports
    ("ready", catalog version) or ("failed", why) to the supervisor on `report`. With
    `feed_relay`, follows the change feed through the pod's feed reader."""
    from service.grpc_api.server import start_server

    if claim is not None:
        claim.close()  # the parent's hold on the port; this worker's listener joins it
    if settings.metrics_port:
        from service.grpc_api.metrics_process import close_inherited_endpoint

        close_inherited_endpoint()  # the supervisor's metrics port
    stop_when_parent_dies()
    try:
        running = start_server(settings, feed_relay=feed_relay)
        ingress = _start_ingress(settings, running)
    except Exception as error:
        if not isinstance(error, EXPECTED_START_ERRORS):
            log.exception("worker pid %d failed to start", os.getpid())
        report.send(("failed", describe_error(error, EXPECTED_START_ERRORS)))
        report.close()
        raise SystemExit(1) from None
    report.send(("ready", running.reads.catalog.version))
    report.close()
    signal.sigwait(STOP_SIGNALS)
    _drain_and_stop(settings, running, ingress)
    flush_audit_summaries()


def _drain_and_stop(
    settings: Settings, running: RunningServer, ingress: RunningIngress | None
) -> None:
    """A worker's graceful stop: the gRPC readiness and the notification ingress's health
    turn unhealthy at once and both keep serving for the drain delay (load balancers
    notice); then the ingress stops (its requests in flight still write), then the gRPC
    server, the two within the shutdown grace."""
    if ingress is None:
        running.stop(settings.shutdown_grace_seconds, settings.drain_delay_seconds)
        return
    stopping = time.monotonic()
    try:
        ingress.drain()
        running.drain(settings.drain_delay_seconds)
        stopping = time.monotonic()
        ingress.stop()
    finally:
        spent = time.monotonic() - stopping
        running.stop(max(0.0, settings.shutdown_grace_seconds - spent))


def _start_ingress(settings: Settings, running: RunningServer) -> RunningIngress | None:
    """The store notification ingress beside the gRPC server and the Google Play
    subscriber (service/ingestion/runner.py), when configured; a failure to start them
    stops the server they joined."""
    if not settings.notifications_port and not settings.play_subscription:
        return None
    from service.ingestion.runner import start_ingress

    try:
        return start_ingress(settings, running)
    except BaseException:
        running.stop(0)
        raise


@dataclasses.dataclass
class _Worker:
    """One worker slot: its current process, and where its (re)start stands."""

    slot: int
    process: ForkProcess | None = None
    # The process's start-up report ("ready" or "failed"), until it is read.
    report: Connection | None = None
    started: float = 0.0
    ready: bool = False
    catalog: str = ""  # the catalog version it serves, as it reported
    failure: str = ""  # why its last start failed, as the worker reported it
    # Consecutive failed starts (the backoff before the next attempt grows with them).
    failed_starts: int = 0
    # A restart waiting for its backoff: when it is due.
    restart_at: float | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


class Supervisor:
    def __init__(self, settings: Settings, workers: int) -> None:
        self._settings = dataclasses.replace(settings, workers=1)
        self._context = multiprocessing.get_context("fork")
        self._workers = [_Worker(slot) for slot in range(workers)]
        self._restarts: list[float] = []
        self._claim: socket.socket | None = None  # the parent's hold on the port
        # The pod's one reader of the store's change feed (None: each worker reads it,
        # or there is none to read).
        self._feed_reader: FeedReader | None = None

    def run(self, announce: Announce, claim: socket.socket | None = None) -> int:
        """Starts the workers on the port `claim` holds (None: claims settings.port here)
        and supervises them until a stop signal (0) or a crash loop (1). Raises
        WorkerStartError, with no worker left running, if one fails to start."""
        own_claim = claim is None
        if claim is None:
            claim = claim_port(self._settings.host, self._settings.port)
        self._claim = claim
        settings = self._settings = dataclasses.replace(self._settings, port=claim.getsockname()[1])
        try:
            if relay_wanted(settings, len(self._workers)):
                self._feed_reader = FeedReader(settings, self._context)
                try:
                    self._feed_reader.start()
                except FeedReaderStartError as error:
                    raise WorkerStartError(str(error)) from None
            for worker in self._workers:
                self._start(worker)
            catalog_version = self._await_start(announce)
            if catalog_version is None:
                return 0  # stopped while starting
            pids = ", ".join(str(worker.pid) for worker in self._workers)
            reader = self._feed_reader
            feed = "" if reader is None else f"; feed reader pid {reader.pid}"
            announce(
                f"serving on {settings.host}:{settings.port} ({len(self._workers)} workers, "
                f"pids {pids}{feed}; catalog {catalog_version})"
            )
            return self._supervise(announce)
        finally:
            self._stop_all()
            if own_claim:
                claim.close()

    def _start(self, worker: _Worker) -> None:
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_worker_main,
            args=(
                self._settings,
                writer,
                self._claim,
                None if self._feed_reader is None else self._feed_reader.socket_path,
            ),
            name=f"entitlements-worker-{worker.slot}",
        )
        process.start()
        writer.close()  # the child's now: its end of file tells it is gone
        if worker.report is not None:
            worker.report.close()
        worker.process, worker.report = process, reader
        worker.started, worker.ready, worker.failure = time.monotonic(), False, ""
        log.info("worker %d started (pid %s)", worker.slot, process.pid)

    def _read_report(self, worker: _Worker) -> None:
        """Takes in the worker's start-up report, if it has sent it."""
        report = worker.report
        if report is None:
            return
        try:
            if not report.poll():
                return
            kind, detail = report.recv()
        except (EOFError, OSError):  # it died without a report
            kind, detail = "failed", ""
        report.close()
        worker.report = None
        if kind == "ready":
            worker.ready, worker.catalog = True, str(detail)
        else:
            worker.failure = str(detail) or worker.failure

    def _await_start(self, announce: Announce) -> str | None:
        """Waits until every worker serves; returns the catalog version they serve (None:
        a stop signal came first)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            for worker in self._workers:
                self._read_report(worker)
                if worker.failure or (
                    not worker.ready and worker.process and not worker.process.is_alive()
                ):
                    raise WorkerStartError(
                        f"worker {worker.slot} failed to start: "
                        f"{worker.failure or self._exit_description(worker)}"
                    )
            if all(worker.ready for worker in self._workers):
                return self._workers[0].catalog
            if time.monotonic() > deadline:
                slots = [worker.slot for worker in self._workers if not worker.ready]
                raise WorkerStartError(
                    f"worker(s) {slots} did not start within {STARTUP_TIMEOUT_SECONDS:.0f} s"
                )
            received = signal.sigtimedwait(STOP_SIGNALS, POLL_SECONDS)
            if received is not None:
                announce(f"{signal.Signals(received.si_signo).name}: stopping the workers")
                return None

    def _supervise(self, announce: Announce) -> int:
        while True:
            received = signal.sigtimedwait(STOP_SIGNALS, POLL_SECONDS)
            if received is not None:
                announce(f"{signal.Signals(received.si_signo).name}: draining workers")
                return 0
            now = time.monotonic()
            if self._feed_reader is not None:
                self._feed_reader.tend(now)
            for worker in self._workers:
                if not self._tend(worker, now, announce):
                    announce("workers keep dying; giving up")
                    return 1

    def _tend(self, worker: _Worker, now: float, announce: Announce) -> bool:
        """Moves one worker along: reads its start-up report, replaces it when it died,
        starts a restart whose backoff is over. False: the crash-loop budget is spent."""
        if worker.restart_at is not None:
            if now >= worker.restart_at:
                worker.restart_at = None
                self._start(worker)
            return True
        process = worker.process
        if process is None:
            return True
        was_ready = worker.ready
        self._read_report(worker)
        if worker.ready and not was_ready:
            worker.failed_starts = 0
            announce(f"worker {worker.slot} restarted (pid {process.pid})")
        if process.is_alive():
            if not worker.ready and now - worker.started > STARTUP_TIMEOUT_SECONDS:
                log.error("worker %d (pid %s) did not start in time", worker.slot, process.pid)
                worker.failure = f"did not start within {STARTUP_TIMEOUT_SECONDS:.0f} s"
                process.kill()  # seen dead, and restarted, on a later round
            return True
        self._read_report(worker)  # a report sent just before it exited
        if worker.ready:  # it was serving: replaced at once
            log.error(
                "worker %d (pid %s) exited with %s; restarting",
                worker.slot,
                process.pid,
                process.exitcode,
            )
            what = f"worker {worker.slot} (pid {process.pid}) died"
            worker.failed_starts = 0
            delay = 0.0
            # Killed from outside (kill -9, the OOM killer), or after serving a while: the
            # world happening to the worker, not a crash loop; replaced however often.
            killed = process.exitcode == -signal.SIGKILL
            if killed or now - worker.started >= QUICK_DEATH_SECONDS:
                worker.process = None
                self._worker_gone(process)
                announce(f"{what}; restarting it")
                worker.restart_at = now
                self._count_restart()
                return True
        else:
            what = (
                f"worker {worker.slot} (pid {process.pid}) failed to start: "
                f"{worker.failure or self._exit_description(worker)}"
            )
            worker.failed_starts += 1
            delay = min(
                RESTART_BACKOFF_SECONDS * 2 ** (worker.failed_starts - 1),
                MAX_RESTART_BACKOFF_SECONDS,
            )
        worker.process = None
        self._worker_gone(process)
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_SECONDS]
        self._restarts.append(now)
        if len(self._restarts) > MAX_RESTARTS:
            announce(f"{what}; {len(self._restarts)} restarts in {RESTART_WINDOW_SECONDS:g} s")
            return False
        announce(f"{what}; restarting it" + (f" in {delay:g} s" if delay else ""))
        worker.restart_at = now + delay
        self._count_restart()
        return True

    def _count_restart(self) -> None:
        if self._settings.metrics_port:
            from service.grpc_api.metrics import supervisor_metrics

            supervisor_metrics().worker_restarts.inc()

    def _worker_gone(self, process: ForkProcess) -> None:
        """A worker process exited: its live gauges leave the metrics' sums."""
        if self._settings.metrics_port and process.pid is not None:
            from service.grpc_api.metrics_process import mark_worker_dead

            mark_worker_dead(process.pid)

    @staticmethod
    def _exit_description(worker: _Worker) -> str:
        process = worker.process
        code = None if process is None else process.exitcode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"

    def _stop_all(self) -> None:
        processes = [w.process for w in self._workers if w.process is not None]
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = (
            time.monotonic()
            + self._settings.drain_delay_seconds
            + self._settings.shutdown_grace_seconds
            + 10
        )
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker pid %s did not drain in time; killing it", process.pid)
                process.kill()
                process.join(5)
            self._worker_gone(process)
        for worker in self._workers:
            if worker.report is not None:
                worker.report.close()
                worker.report = None
        if self._feed_reader is not None:  # after the workers: they follow it to the end
            self._feed_reader.stop()
            self._feed_reader = None
