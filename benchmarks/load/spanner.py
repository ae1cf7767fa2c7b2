"""The Spanner emulator for the cache-miss-on-Spanner scenario (optional).

Starts `emulator_main` (Debian package google-cloud-cli-spanner-emulator) on a free
loopback port, creates an instance and a migrated database and seeds the benchmark users.
Anything missing (the binary, the spanner backend) makes `prepare` return a reason to skip
instead of failing the run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from benchmarks.data import seed
from benchmarks.load.servers import free_port

DEFAULT_BINARY = Path("/usr/lib/google-cloud-sdk/bin/cloud_spanner_emulator/emulator_main")
BINARY_ENV = "SPANNER_EMULATOR_BINARY"
PROJECT, INSTANCE, DATABASE = "bench-project", "bench-instance", "bench"
STARTUP_SECONDS = 30.0
EMULATOR_HOST_ENV = "SPANNER_EMULATOR_HOST"
# Emulator 1.5.28 loses concurrent read-write transactions on multiplexed sessions.
MULTIPLEXED_RW_ENV = "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_FOR_RW"


@dataclass
class Emulator:
    process: subprocess.Popen[bytes]
    host: str
    storage_url: str = ""

    def server_env(self) -> dict[str, str]:
        return {EMULATOR_HOST_ENV: self.host, MULTIPLEXED_RW_ENV: "false"}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def find_binary() -> Path | None:
    override = os.environ.get(BINARY_ENV)
    if override:
        return Path(override) if os.access(override, os.X_OK) else None
    found = shutil.which("emulator_main")
    if found:
        return Path(found)
    return DEFAULT_BINARY if os.access(DEFAULT_BINARY, os.X_OK) else None


def prepare(users: int, now: datetime, log_path: Path) -> tuple[Emulator | None, str]:
    """(the emulator with a seeded database, "") or (None, why the scenario is skipped)."""
    binary = find_binary()
    if binary is None:
        return None, f"Spanner emulator not found ({DEFAULT_BINARY}; set ${BINARY_ENV})"
    try:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import spanner

        from storage.spanner import SpannerRepository, migrate
        from storage.urls import UnsupportedStorageUrl, open_repository
    except ImportError as error:
        return None, f"the Spanner backend is not available: {error}"
    port = free_port()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [str(binary), f"--host_port=127.0.0.1:{port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    emulator = Emulator(process, f"127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the emulator did not start") from None
                time.sleep(0.05)
        os.environ[MULTIPLEXED_RW_ENV] = "false"
        client = spanner.Client(
            project=PROJECT,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": emulator.host},
            disable_builtin_metrics=True,
        )
        instance = client.instance(
            INSTANCE,
            configuration_name=f"projects/{PROJECT}/instanceConfigs/emulator-config",
            node_count=1,
        )
        instance.create().result(STARTUP_SECONDS)
        instance.database(DATABASE).create().result(STARTUP_SECONDS)
        url = f"spanner://projects/{PROJECT}/instances/{INSTANCE}/databases/{DATABASE}"
        migrate(url, endpoint=emulator.host)
        try:
            open_repository(url).close()  # the service must accept the URL
        except UnsupportedStorageUrl as error:
            raise RuntimeError(f"storage URL not supported: {error}") from error
        repository = SpannerRepository(url, endpoint=emulator.host, default_timeout=30)
        try:
            seed(repository, users, now)
        finally:
            repository.close()
        emulator.storage_url = url
        return emulator, ""
    except Exception as error:  # any failure skips this optional scenario with the reason
        emulator.stop()
        return None, f"Spanner emulator setup failed: {type(error).__name__}: {error}"
