"""The pod's one reader of the store's change feed: a process beside the workers.

With several workers, `entitlements serve` forks this process first (before any worker,
and like them before any gRPC, SQLite or Spanner object exists in the supervisor). It
opens the store, follows its change feed (storage.feed_relay.FeedRelay) and relays the
changes to every worker over a Unix socket in a private folder; each worker's cache,
watch streams and callers' change streams follow the relay. So the store sees one feed
reader per pod, whatever the number of workers (entitlements_feed_reads_total).

The supervisor replaces the reader when it dies; meanwhile the workers' reads fail, and
after their grace (a second) they treat the feed as lost: no cache serves stale state
silently. The new reader starts a new epoch, so every worker drops its cache once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from multiprocessing.connection import Connection
from multiprocessing.context import ForkContext, ForkProcess
from pathlib import Path

from service.config import Settings
from service.grpc_api.child_process import STOP_SIGNALS, describe_error, stop_when_parent_dies
from storage.feed import ChangeFeed
from storage.feed_relay import FeedRelay
from storage.urls import open_repository

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_SECONDS = 60.0
RESTART_BACKOFF_SECONDS = 0.25
MAX_RESTART_BACKOFF_SECONDS = 4.0


def relay_wanted(settings: Settings, workers: int) -> bool:
    """Several workers following a shared store's feed: one reader for all of them. (A
    memory:// store is each worker's own, and has nothing to share.)"""
    return (
        workers > 1
        and settings.feed_poll_seconds > 0
        and settings.cache_ttl_seconds > 0
        and not settings.storage_url.startswith("memory:")
    )


class FeedReaderStartError(Exception):
    """The feed reader failed to start when the server started."""


class FeedReader:
    """The supervisor's handle on the reader process: start, replace when dead, stop."""

    def __init__(self, settings: Settings, context: ForkContext) -> None:
        self._settings = settings
        self._context = context
        self._folder = Path(tempfile.mkdtemp(prefix="entitlements-feed-"))  # 0700
        self.socket_path = str(self._folder / "relay.sock")
        self._process: ForkProcess | None = None
        self._failed_starts = 0
        self._restart_at: float | None = None
        self._started = 0.0

    def start(self) -> None:
        """Starts the reader and waits until it serves the socket; FeedReaderStartError
        when it cannot."""
        report = self._spawn()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        try:
            while not report.poll(0.1):
                if self._process is None or not self._process.is_alive():
                    raise FeedReaderStartError("the feed reader exited while starting")
                if time.monotonic() > deadline:
                    raise FeedReaderStartError(
                        f"the feed reader did not start within {STARTUP_TIMEOUT_SECONDS:.0f} s"
                    )
            kind, detail = report.recv()
        except (EOFError, OSError) as error:
            raise FeedReaderStartError(f"the feed reader exited while starting ({error})") from None
        finally:
            report.close()
        if kind != "ready":
            raise FeedReaderStartError(f"the feed reader failed to start: {detail}")

    def tend(self, now: float) -> None:
        """Replaces a reader that died (with backoff while replacements die at once)."""
        if self._restart_at is not None:
            if now >= self._restart_at:
                self._restart_at = None
                self._spawn().close()  # its readiness shows in the workers' reads
            return
        process = self._process
        if process is None or process.is_alive():
            return
        quick = now - self._started < 2.0
        self._failed_starts = self._failed_starts + 1 if quick else 0
        delay = (
            min(
                RESTART_BACKOFF_SECONDS * 2 ** (self._failed_starts - 1),
                MAX_RESTART_BACKOFF_SECONDS,
            )
            if self._failed_starts
            else 0.0
        )
        log.error(
            "the feed reader (pid %s) exited with %s; replacing it%s",
            process.pid,
            process.exitcode,
            f" in {delay:g} s" if delay else "",
        )
        self._process = None
        self._restart_at = now + delay

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def stop(self, timeout: float = 10.0) -> None:
        process = self._process
        if process is not None and process.pid is not None and process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join(5)
        self._process = None
        shutil.rmtree(self._folder, ignore_errors=True)

    def _spawn(self) -> Connection:
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_reader_main,
            args=(self._settings, self.socket_path, writer),
            name="entitlements-feed-reader",
        )
        process.start()
        writer.close()
        self._process, self._started = process, time.monotonic()
        log.info("feed reader started (pid %s)", process.pid)
        return reader


def _reader_main(settings: Settings, socket_path: str, report: Connection) -> None:
    """Runs in a forked child, with the stop signals still blocked (inherited)."""
    if settings.metrics_port:
        from service.grpc_api.metrics_process import close_inherited_endpoint

        close_inherited_endpoint()  # the supervisor's metrics port
    stop_when_parent_dies()
    try:
        repository = open_repository(settings.storage_url)
        if not isinstance(repository, ChangeFeed):
            raise TypeError(f"the store {settings.storage_url!r} has no change feed")
        on_read = None
        if settings.metrics_port:
            from service.grpc_api.metrics import feed_reads

            on_read = feed_reads().inc
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)  # left by a reader that died
        relay = FeedRelay(
            repository,
            socket_path,
            poll_seconds=settings.feed_poll_seconds,
            store_timeout_seconds=settings.store_timeout_seconds,
            lost_after_seconds=max(1.0, 2 * settings.feed_poll_seconds),
            on_read=on_read,
        )
        relay.start()
    except Exception as error:
        log.error("the feed reader failed to start: %s", describe_error(error))
        report.send(("failed", describe_error(error)))
        report.close()
        raise SystemExit(1) from None
    report.send(("ready", ""))
    report.close()
    signal.sigwait(STOP_SIGNALS)
    relay.stop()
    repository.close()
