"""Test tooling, not used by the service: runs the Cloud Spanner emulator locally for the
tests (tests/spanner_emulator.py) and the load benchmark. Finds `emulator_main`
(Debian package google-cloud-cli-spanner-emulator; $SPANNER_EMULATOR_BINARY overrides),
starts it on a free loopback port, creates an instance and migrated databases, and stops
it by its PID.

Emulator quirk: version 1.5.28 loses concurrent read-write transactions on multiplexed
sessions, so clients talking to it need GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_FOR_RW
set to "false" (`child_env()` does it for child processes).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from google.api_core import exceptions as api_exceptions
from google.cloud import spanner
from google.cloud.spanner_v1 import KeySet
from google.cloud.spanner_v1.transaction import Transaction

from storage.spanner import DatabasePath, changes, migrate
from storage.spanner.client import (
    EMULATOR_HOST_ENV,
    MULTIPLEXED_RW_ENV,
    database_handle,
    new_client,
)

BINARY_ENV = "SPANNER_EMULATOR_BINARY"
DEBIAN_PACKAGE = "google-cloud-cli-spanner-emulator"
DEFAULT_BINARY = Path("/usr/lib/google-cloud-sdk/bin/cloud_spanner_emulator/emulator_main")
PROJECT = "test-project"
INSTANCE = "test-instance"
STARTUP_SECONDS = 30.0


def find_binary() -> Path | None:
    """$SPANNER_EMULATOR_BINARY, emulator_main on $PATH, the Debian package's path, or
    what `dpkg -L` lists for the package."""
    override = os.environ.get(BINARY_ENV)
    if override:
        return Path(override) if os.access(override, os.X_OK) else None
    on_path = shutil.which("emulator_main")
    if on_path:
        return Path(on_path)
    if os.access(DEFAULT_BINARY, os.X_OK):
        return DEFAULT_BINARY
    if shutil.which("dpkg"):
        try:
            listed = subprocess.run(
                ["dpkg", "-L", DEBIAN_PACKAGE],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
        for line in listed.splitlines():
            if line.endswith("/emulator_main") and os.access(line, os.X_OK):
                return Path(line)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class SpannerEmulator:
    process: subprocess.Popen[bytes]
    host: str  # 127.0.0.1:PORT
    log_file: Path
    project: str = PROJECT
    instance: str = INSTANCE
    _names: Iterator[int] = field(default_factory=itertools.count)
    _shared: dict[str, DatabasePath] = field(default_factory=dict)

    def create_database(
        self, prefix: str = "db", *, migrated: bool = True, name: str | None = None
    ) -> DatabasePath:
        """A new empty database, with every migration applied unless `migrated` is False
        (named `name`, or a new name from `prefix`)."""
        name = name or f"{prefix}-{next(self._names)}"
        path = DatabasePath(self.project, self.instance, name)
        client = self.admin_client()
        client.instance(self.instance).database(name).create().result(STARTUP_SECONDS)
        if migrated:
            migrate(path, endpoint=self.host)
        return path

    def shared_database(self, purpose: str) -> DatabasePath:
        """One database per purpose for the whole session (clear it between tests)."""
        if purpose not in self._shared:
            self._shared[purpose] = self.create_database(purpose)
        return self._shared[purpose]

    def clear(self, path: DatabasePath) -> None:
        """Deletes every user, and with them all their rows (ON DELETE CASCADE), and the
        change feed."""

        def delete_all(transaction: Transaction) -> None:
            transaction.delete("Users", KeySet(all_=True))
            transaction.delete(changes.TABLE, KeySet(all_=True))

        database_handle(path, self.host).run_in_transaction(delete_all)

    def create_instance(self) -> None:
        """Creates the instance; retries while the emulator's port still refuses (after a
        restart, gRPC may still be backing off from the refused connections)."""
        client = self.admin_client()
        instance = client.instance(
            self.instance,
            configuration_name=f"projects/{self.project}/instanceConfigs/emulator-config",
            node_count=1,
        )
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                instance.create().result(STARTUP_SECONDS)
                return
            except api_exceptions.ServiceUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def admin_client(self) -> spanner.Client:
        return new_client(self.project, self.host)

    def child_env(self) -> dict[str, str]:
        """Environment for a child process that talks to the emulator."""
        return {**os.environ, EMULATOR_HOST_ENV: self.host, MULTIPLEXED_RW_ENV: "false"}

    @property
    def port(self) -> int:
        return int(self.host.rpartition(":")[2])

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The emulator stopped (SIGSTOP, by its PID) inside the block, as on a machine too
        busy to schedule it: connections stay open, calls wait. Resumed (SIGCONT) after."""
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """kill -9 of this emulator (by its PID): every database in it is gone."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)

    def restart(self) -> None:
        """Starts the emulator again on the same port (after `kill` or `stop`): empty,
        without the instance; `create_instance` and `create_database` make them again."""
        if self.process.poll() is None:
            raise RuntimeError("the emulator is still running")
        binary = self.process.args[0] if isinstance(self.process.args, list) else None
        if binary is None:
            raise RuntimeError("unknown emulator binary")
        self.process = _spawn(Path(binary), self.port, self.log_file)
        if not _serving(self.process, self.port):
            self.stop()
            raise RuntimeError(f"the Spanner emulator did not restart; its log: {self.log_file}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _spawn(binary: Path, port: int, log_file: Path) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as log:
        return subprocess.Popen(
            [str(binary), f"--host_port=127.0.0.1:{port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _serving(process: subprocess.Popen[bytes], port: int) -> bool:
    """Waits until the emulator accepts connections on `port` (False if it exits or
    takes longer than STARTUP_SECONDS)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while process.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.05)
            continue
        return True
    return False


def start_emulator(binary: Path, log_file: Path) -> SpannerEmulator:
    """Starts the emulator on a free loopback port and waits until it serves (a few
    tries, in case another process takes the port first)."""
    for _ in range(3):
        port = _free_port()
        emulator = SpannerEmulator(_spawn(binary, port, log_file), f"127.0.0.1:{port}", log_file)
        if _serving(emulator.process, port):
            return emulator
        emulator.stop()
    raise RuntimeError(f"the Spanner emulator did not start; its log: {log_file}")
