"""The server under a drill: a real `entitlements serve --workers N` process tree, started
with an optional command prefix (setpriv) and extra environment, its output read on a
thread (announcements: the port, the serving worker pids, deaths and restarts), stopped
by its PID.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.load.servers import clean_environment, entitlements_command

STARTUP_SECONDS = 60.0
STOP_SECONDS = 30.0
TAIL_LINES = 400

_SERVING = re.compile(r"entitlements: serving on (\S+):(\d+) \((\d+) workers?, pids? ([\d, ]+)[;)]")
_RESTARTED = re.compile(r"entitlements: worker \d+ restarted \(pid (\d+)\)")
_DIED = re.compile(r"entitlements: worker \d+ \(pid (\d+)\) (?:died|failed to start)")


class ServerFailed(RuntimeError):
    pass


@dataclass
class ServeProcess:
    """`entitlements serve` and what its output said so far."""

    process: subprocess.Popen[str]
    workers: int
    host: str = ""
    port: int = 0
    tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=TAIL_LINES)
    )
    # The worker pids serving now (per the supervisor's announcements).
    serving_pids: set[int] = field(default_factory=set)
    # monotonic time of each change in the number of serving workers: (time, count).
    worker_counts: list[tuple[float, int]] = field(default_factory=list)
    announced: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _reader: threading.Thread | None = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def serving(self) -> list[int]:
        with self._lock:
            return sorted(self.serving_pids)

    def all_workers_serving_since(self) -> float | None:
        """Since when all the workers serve (None: not now)."""
        with self._lock:
            if not self.worker_counts or self.worker_counts[-1][1] < self.workers:
                return None
            return self.worker_counts[-1][0]

    def output_tail(self, lines: int = 40) -> str:
        with self._lock:
            return "".join(list(self.tail)[-lines:])

    def _read(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        for line in stream:
            now = time.monotonic()
            with self._lock:
                self.tail.append(line)
                if "entitlements: " not in line:
                    continue
                before = len(self.serving_pids)
                if match := _SERVING.search(line):
                    self.host, self.port = match.group(1), int(match.group(2))
                    self.serving_pids = {int(p) for p in match.group(4).split(",")}
                    self.announced.set()
                elif match := _RESTARTED.search(line):
                    self.serving_pids.add(int(match.group(1)))
                elif match := _DIED.search(line):
                    self.serving_pids.discard(int(match.group(1)))
                if len(self.serving_pids) != before or not self.worker_counts:
                    self.worker_counts.append((now, len(self.serving_pids)))
        self.announced.set()  # it exited: nobody waits for an announcement any longer

    def stop(self) -> None:
        """SIGTERM to the parent (it drains its workers), SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._reader is not None:
            self._reader.join(timeout=5)


def start_serve(
    storage_url: str,
    credentials: Path,
    *,
    workers: int = 2,
    prefix: Sequence[str] = (),
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ServeProcess:
    """`entitlements serve` on a free loopback port; returns once every worker serves."""
    command = [
        *prefix,
        *entitlements_command(),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--workers",
        str(workers),
        "--storage",
        storage_url,
    ]
    environment = clean_environment(
        {
            "ENTITLEMENTS_CREDENTIALS_FILE": str(credentials),
            "ENTITLEMENTS_LOG_FORMAT": "text",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
    )
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=environment,
        cwd=cwd,
    )
    server = ServeProcess(process, workers)
    server._reader = threading.Thread(target=server._read, name="serve-output", daemon=True)
    server._reader.start()
    if not server.announced.wait(STARTUP_SECONDS) or not server.port:
        server.stop()
        raise ServerFailed("entitlements serve did not start:\n" + server.output_tail())
    return server


def kill_worker(server: ServeProcess, pid: int) -> None:
    """kill -9 of one worker of this server (only a pid it announced as serving)."""
    if pid not in server.serving():
        raise ValueError(f"pid {pid} is not a serving worker of this server")
    os.kill(pid, signal.SIGKILL)
