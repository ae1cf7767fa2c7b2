"""Runs `entitlements serve` as a real child process on a free loopback port."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ENTITLEMENTS = shutil.which("entitlements") or str(Path(sys.executable).parent / "entitlements")


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    target: str
    output: list[str] = field(default_factory=list)

    def kill_hard(self) -> None:
        """kill -9: no shutdown code runs."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


def await_serving(process: subprocess.Popen[str]) -> tuple[str, list[str], threading.Thread]:
    """Reads `serve`'s output until it reports HOST:PORT (every worker serving), then keeps
    draining it (audit lines) into the returned list on a thread, so the child never
    blocks on a full pipe."""
    assert process.stdout is not None
    stream = process.stdout
    output: list[str] = []
    target = None
    for line in stream:
        output.append(line)
        match = re.search(r"entitlements: serving on (\S+:\d+)", line)
        if match:
            target = match.group(1)
            break
    assert target, "server did not report its port:\n" + "".join(output)
    drain = threading.Thread(target=lambda: output.extend(stream), daemon=True)
    drain.start()
    return target, output, drain


@contextmanager
def server_process(
    db: Path,
    credentials: Path,
    *extra_args: str,
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> Iterator[ServerProcess]:
    """`env` adds ENTITLEMENTS_* settings; those of the test process's own environment
    are passed on too (tests set them with monkeypatch)."""
    env = {
        **os.environ,
        "ENTITLEMENTS_CREDENTIALS_FILE": str(credentials),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    process = subprocess.Popen(
        [
            ENTITLEMENTS,
            "serve",
            "--port",
            "0",
            "--storage",
            f"sqlite:///{db}",
            "--workers",
            str(workers),
            *extra_args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    target, output, drain = await_serving(process)
    server = ServerProcess(process, target, output)
    try:
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        drain.join(timeout=5)


def worker_pids(server: ServerProcess) -> list[int]:
    """The worker PIDs `serve` reports in its banner."""
    banner = next(line for line in server.output if "entitlements: serving on" in line)
    return [int(pid) for pid in banner.split("pids ")[1].split(";")[0].split(", ")]


def feed_reader_pid(output: list[str]) -> int:
    """The feed reader's pid, from `serve`'s banner."""
    banner = next(line for line in output if "entitlements: serving on" in line)
    match = re.search(r"feed reader pid (\d+)", banner)
    assert match, banner
    return int(match.group(1))
