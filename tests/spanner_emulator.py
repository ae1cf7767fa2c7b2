"""The Cloud Spanner emulator for tests: a session fixture that starts the real
`emulator_main` (Debian package google-cloud-cli-spanner-emulator) on a free loopback
port, creates an instance, hands out fresh migrated databases, and stops the emulator by
its PID at the end.

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

import pytest

from storage.spanner.client import EMULATOR_HOST_ENV, MULTIPLEXED_RW_ENV
from storage.spanner.testing import (
    BINARY_ENV,
    DEBIAN_PACKAGE,
    SpannerEmulator,
    find_binary,
    start_emulator,
)

__all__ = ["SpannerEmulator", "spanner_emulator"]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def spanner_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpannerEmulator]:
    binary = find_binary()
    if binary is None:
        reason = (
            "SPANNER EMULATOR NOT FOUND: the Cloud Spanner tests did not run. Install the "
            f"Debian package {DEBIAN_PACKAGE} (or set ${BINARY_ENV} to emulator_main)."
        )
        if in_ci():
            pytest.fail(reason + " CI requires them.")
        pytest.skip(reason)
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
