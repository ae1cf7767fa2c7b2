"""Test tooling for the Spanner backend (tests and benchmarks only; not part of the
installed package): running the Cloud Spanner emulator."""

from storage.spanner.testing.emulator import (
    BINARY_ENV,
    DEBIAN_PACKAGE,
    DEFAULT_BINARY,
    SpannerEmulator,
    find_binary,
    start_emulator,
)

__all__ = [
    "BINARY_ENV",
    "DEBIAN_PACKAGE",
    "DEFAULT_BINARY",
    "SpannerEmulator",
    "find_binary",
    "start_emulator",
]
