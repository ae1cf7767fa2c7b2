"""The Spanner emulator for the cache-miss-on-Spanner scenario (optional).

Starts `emulator_main` through storage.spanner.testing (the same tooling the tests
use), creates an instance and a migrated database and seeds the benchmark users.
Anything missing (the binary, the spanner backend) makes `prepare` return a reason to skip
instead of failing the run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.data import seed

EMULATOR_HOST_ENV = "SPANNER_EMULATOR_HOST"
# Emulator 1.5.28 loses concurrent read-write transactions on multiplexed sessions.
MULTIPLEXED_RW_ENV = "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_FOR_RW"


@dataclass
class Emulator:
    emulator: Any  # storage.spanner.testing.SpannerEmulator (imported only when available)
    storage_url: str

    def server_env(self) -> dict[str, str]:
        return {EMULATOR_HOST_ENV: self.emulator.host, MULTIPLEXED_RW_ENV: "false"}

    def stop(self) -> None:
        self.emulator.stop()


def prepare(users: int, now: datetime, log_path: Path) -> tuple[Emulator | None, str]:
    """(the emulator with a seeded database, "") or (None, why the scenario is skipped)."""
    try:
        from storage.spanner import SpannerRepository
        from storage.spanner.testing import DEFAULT_BINARY, find_binary, start_emulator
        from storage.urls import UnsupportedStorageUrl, open_repository
    except ImportError as error:
        return None, f"the Spanner backend is not available: {error}"
    binary = find_binary()
    if binary is None:
        return None, f"Spanner emulator not found ({DEFAULT_BINARY}; set $SPANNER_EMULATOR_BINARY)"
    try:
        emulator = start_emulator(binary, log_path)
    except RuntimeError as error:
        return None, f"Spanner emulator setup failed: {error}"
    try:
        os.environ[MULTIPLEXED_RW_ENV] = "false"
        emulator.create_instance()
        path = emulator.create_database("bench")
        url = path.url
        try:
            open_repository(url).close()  # the service must accept the URL
        except UnsupportedStorageUrl as error:
            raise RuntimeError(f"storage URL not supported: {error}") from error
        repository = SpannerRepository(path, endpoint=emulator.host, default_timeout=30)
        try:
            seed(repository, users, now)
        finally:
            repository.close()
        return Emulator(emulator, url), ""
    except Exception as error:  # any failure skips this optional scenario with the reason
        emulator.stop()
        return None, f"Spanner emulator setup failed: {type(error).__name__}: {error}"
