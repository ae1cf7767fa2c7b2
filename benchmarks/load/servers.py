"""The servers a run measures, each started as its own process tree and stopped by pid.

- the service: the real `entitlements serve --workers N --port 0 --storage URL` command;
- the floors: `python -m benchmarks.floor_server --kind sync|aio --workers N --port 0`;
- optionally the Cloud Spanner emulator (`emulator_main`) for the Spanner scenario.

Both servers print the port they bound and their worker pids; the coordinator reads them
from the log, and reads the workers' CPU time from /proc/<pid>/stat.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ANNOUNCE = re.compile(r"serving on (\S+):(\d+) \((\d+) workers?, pids? ([\d, ]+)[;)]")
STARTUP_SECONDS = 60.0
STOP_SECONDS = 20.0
ENV_PREFIX = "ENTITLEMENTS_"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Servers run from the repository root, so `python -m benchmarks.floor_server` resolves.
REPO_ROOT = Path(__file__).resolve().parents[2]


class ServerFailed(RuntimeError):
    pass


@dataclass
class ServerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    host: str = ""
    port: int = 0
    worker_pids: tuple[int, ...] = ()

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def cpu_seconds(self) -> float:
        """User + system CPU time of the worker processes so far."""
        return sum(process_cpu_seconds(pid) for pid in self.worker_pids)

    def wait_serving(self, timeout: float = STARTUP_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = ANNOUNCE.search(self.log_path.read_text(errors="replace"))
            if match:
                self.host, self.port = match.group(1), int(match.group(2))
                self.worker_pids = tuple(int(p) for p in match.group(4).split(","))
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise ServerFailed(f"{self.name} did not start serving:\n{tail}")

    def stop(self) -> None:
        """SIGTERM to the process we started (it drains its workers), SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def process_cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After "pid (comm)": state is field 0, utime 11, stime 12.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat)."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def clean_environment(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any ENTITLEMENTS_* setting, plus `extra`: the
    floor and the service see exactly the settings the run gives them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(extra)
    return env


def _start(name: str, command: list[str], env: dict[str, str], log_path: Path) -> ServerProcess:
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
        )
    server = ServerProcess(name, process, log_path)
    server.wait_serving()
    return server


def entitlements_command() -> list[str]:
    script = Path(sys.executable).parent / "entitlements"
    if script.exists():
        return [str(script)]
    found = shutil.which("entitlements")
    return [found] if found else [sys.executable, "-m", "service.cli"]


def start_service(
    name: str, workers: int, storage_url: str, env: dict[str, str], log_path: Path
) -> ServerProcess:
    command = [
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
    return _start(name, command, clean_environment(env), log_path)


def start_floor(
    kind: str, workers: int, env: dict[str, str], log_path: Path, name: str = ""
) -> ServerProcess:
    """The empty-handler floor of `kind` (sync or aio, benchmarks/floor_server.py)."""
    command = [sys.executable, "-m", "benchmarks.floor_server", "--kind", kind, "--port", "0"]
    command += ["--workers", str(workers)]
    return _start(name or f"floor-{kind}", command, clean_environment(env), log_path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
