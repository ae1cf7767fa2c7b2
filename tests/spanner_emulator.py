"""The Cloud Spanner emulator for tests: a session fixture that starts the real
`emulator_main` (Debian package google-cloud-cli-spanner-emulator) on a free loopback
port, creates an instance, hands out fresh migrated databases, and stops the emulator by
its PID at the end. Tests that kill, restart or pause an emulator take one of their own
(`private_spanner_emulator`), so the session's stays up for every other test.

When the binary is missing the Spanner tests are skipped with a loud reason, except under
CI (CI=true), where they fail: CI must run them. $SPANNER_EMULATOR_BINARY overrides where
the binary is looked for.

In-process clients reach the emulator through an explicit endpoint
(SpannerRepository(..., endpoint=emulator.host)); $SPANNER_EMULATOR_HOST is left unset in
this process, because the client library prefers it over any endpoint and the fault tests
point clients at a mock server. Child processes (the CLI) get it through `child_env()`.
Emulator quirk worked around here: version 1.5.28 loses concurrent read-write
transactions on multiplexed sessions, so GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_FOR_RW
is "false" while the fixture runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.spanner.client import EMULATOR_HOST_ENV, MULTIPLEXED_RW_ENV
from storage.spanner.testing import (
    BINARY_ENV,
    DEBIAN_PACKAGE,
    SpannerEmulator,
    find_binary,
    start_emulator,
)

__all__ = [
    "BUSY_MACHINE_STORE_TIMEOUT",
    "SpannerEmulator",
    "private_spanner_emulator",
    "spanner_emulator",
]

# The store budget of servers on the emulator in tests (Settings.store_timeout_seconds;
# the default is 0.5 s): on a busy machine (CI, load average ~5) the emulator can take
# longer than 0.5 s per call, and the tests assert answers, not the store's latency.
BUSY_MACHINE_STORE_TIMEOUT = 5.0


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _binary() -> Path:
    """The emulator binary; skips (fails under CI) when it is missing."""
    binary = find_binary()
    if binary is None:
        reason = (
            "SPANNER EMULATOR NOT FOUND: the Cloud Spanner tests did not run. Install the "
            f"Debian package {DEBIAN_PACKAGE} (or set ${BINARY_ENV} to emulator_main)."
        )
        if in_ci():
            pytest.fail(reason + " CI requires them.")
        pytest.skip(reason)
    return binary


@pytest.fixture
def private_spanner_emulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SpannerEmulator]:
    """An emulator of the test's own (with its instance), for tests that kill, restart
    or pause it: the session's emulator stays untouched. Stopped by its PID."""
    emulator = start_emulator(_binary(), tmp_path / "emulator.log")
    monkeypatch.setenv(MULTIPLEXED_RW_ENV, "false")
    monkeypatch.delenv(EMULATOR_HOST_ENV, raising=False)
    try:
        emulator.create_instance()
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def spanner_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpannerEmulator]:
    binary = _binary()
    emulator = start_emulator(binary, tmp_path_factory.mktemp("spanner") / "emulator.log")
    saved = {name: os.environ.get(name) for name in (MULTIPLEXED_RW_ENV, EMULATOR_HOST_ENV)}
    os.environ[MULTIPLEXED_RW_ENV] = "false"
    # In-process clients name their endpoint; an inherited $SPANNER_EMULATOR_HOST would
    # override it (see the module docstring).
    os.environ.pop(EMULATOR_HOST_ENV, None)
    try:
        emulator.create_instance()
        yield emulator
    finally:
        emulator.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
