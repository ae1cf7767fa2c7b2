"""Serving with N worker processes on one port (SO_REUSEPORT), supervised.

Python runs one core per process, so a machine's cores are used by several workers, each
a full server with its own cache and store connections. Workers are forked before any
gRPC, SQLite or Spanner object exists in the parent (forking a running gRPC server is
unsupported), which only supervises: a worker that dies is logged and replaced, and
SIGTERM or SIGINT to the parent drains every worker (each stops gracefully) before the
parent exits 0. The kernel balances connections (not RPCs) across the workers' listening
sockets, so clients need several connections, and a maximum connection age makes
long-lived clients rebalance.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import multiprocessing
import os
import queue
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing.context import ForkProcess
from typing import Any

from service.config import Settings

log = logging.getLogger(__name__)

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
STARTUP_TIMEOUT_SECONDS = 60.0
PR_SET_PDEATHSIG = 1
# A worker dying more often than this is a crash loop: the supervisor gives up.
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 30.0

Announce = Callable[[str], None]


def worker_count(settings: Settings) -> int:
    return settings.workers if settings.workers > 0 else (os.cpu_count() or 1)


def serve(settings: Settings, announce: Announce) -> int:
    """Serves until SIGTERM or SIGINT; returns the exit status."""
    # Block the stop signals before anything starts threads (they inherit the mask) and
    # wait for them synchronously: a handler-based wait can sleep through a signal the
    # kernel delivered to another thread.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    workers = worker_count(settings)
    if workers == 1:
        return _serve_in_process(settings, announce)
    return Supervisor(settings, workers).run(announce)


def _serve_in_process(settings: Settings, announce: Announce) -> int:
    from service.grpc_api.server import start_server

    running = start_server(settings)
    announce(
        f"serving on {settings.host}:{running.port} (1 worker, pid {os.getpid()}; "
        f"catalog {running.reads.catalog.version})"
    )
    received = signal.sigwait(STOP_SIGNALS)
    announce(f"{signal.Signals(received).name}: draining")
    running.stop(settings.shutdown_grace_seconds)
    return 0


def _worker_main(settings: Settings, slot: int, ready: Any) -> None:
    """Runs in a forked child, with the stop signals still blocked (inherited)."""
    from service.grpc_api.server import start_server

    _stop_when_parent_dies()

    running = start_server(settings)
    ready.put((slot, os.getpid(), running.reads.catalog.version))
    signal.sigwait(STOP_SIGNALS)
    running.stop(settings.shutdown_grace_seconds)


def _stop_when_parent_dies() -> None:
    """Linux: SIGTERM this worker when the supervisor dies (even by kill -9), so no
    orphan keeps serving a port nobody supervises."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        log.warning("cannot tie the worker's life to the supervisor's")
    if os.getppid() == 1:  # the supervisor died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def reserve_port(host: str) -> socket.socket:
    """A bound (not listening) SO_REUSEPORT socket on a free port: it keeps the port ours
    while the workers bind it too, and takes no connections itself."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reservation = socket.socket(family, socket.SOCK_STREAM)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reservation.bind((host, 0))
    return reservation


class Supervisor:
    def __init__(self, settings: Settings, workers: int) -> None:
        self._settings = settings
        self._workers = workers
        self._context = multiprocessing.get_context("fork")
        self._ready: Any = self._context.Queue()
        self._processes: dict[int, ForkProcess] = {}
        self._restarts: list[float] = []

    def run(self, announce: Announce) -> int:
        reservation = None
        settings = self._settings
        if settings.port == 0:
            reservation = reserve_port(settings.host)
            settings = dataclasses.replace(settings, port=reservation.getsockname()[1])
        self._settings = dataclasses.replace(settings, workers=1)
        try:
            for slot in range(self._workers):
                self._start(slot)
            catalog_version = self._await_ready(set(range(self._workers)))
            if catalog_version is None:
                self._stop_all()
                return 1
            pids = ", ".join(str(p.pid) for p in self._processes.values())
            announce(
                f"serving on {settings.host}:{settings.port} ({self._workers} workers, "
                f"pids {pids}; catalog {catalog_version})"
            )
            status = self._supervise(announce)
            self._stop_all()
            return status
        finally:
            if reservation is not None:
                reservation.close()

    def _start(self, slot: int) -> None:
        process = self._context.Process(
            target=_worker_main,
            args=(self._settings, slot, self._ready),
            name=f"entitlements-worker-{slot}",
        )
        process.start()
        self._processes[slot] = process
        log.info("worker %d started (pid %s)", slot, process.pid)

    def _await_ready(self, slots: set[int]) -> str | None:
        """Waits until the workers of `slots` serve; None if one died first."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        version = ""
        while slots:
            try:
                slot, _pid, version = self._ready.get(timeout=0.2)
                slots.discard(slot)
            except queue.Empty:
                dead = [s for s in slots if not self._processes[s].is_alive()]
                if dead or time.monotonic() > deadline:
                    log.error("worker(s) %s failed to start", dead or sorted(slots))
                    return None
        return version

    def _supervise(self, announce: Announce) -> int:
        while True:
            received = signal.sigtimedwait(STOP_SIGNALS, 0.2)
            if received is not None:
                announce(f"{signal.Signals(received.si_signo).name}: draining workers")
                return 0
            for slot, process in list(self._processes.items()):
                if process.is_alive():
                    continue
                log.error(
                    "worker %d (pid %s) exited with %s; restarting",
                    slot,
                    process.pid,
                    process.exitcode,
                )
                announce(f"worker {slot} (pid {process.pid}) died; restarting it")
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_SECONDS]
                self._restarts.append(now)
                if len(self._restarts) > MAX_RESTARTS:
                    announce("workers keep dying; giving up")
                    return 1
                self._start(slot)
                if self._await_ready({slot}) is None:
                    return 1
                announce(f"worker {slot} restarted (pid {self._processes[slot].pid})")

    def _stop_all(self) -> None:
        for process in self._processes.values():
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._settings.shutdown_grace_seconds + 10
        for process in self._processes.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker pid %s did not drain in time; killing it", process.pid)
                process.kill()
                process.join(5)
