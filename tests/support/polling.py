"""Waiting for a condition on a real server: the one polling loop of the suite."""

from __future__ import annotations

import time
from collections.abc import Callable

# Far below the cache TTL, far above the change feed's poll interval (0.1 s).
SEEN_WITHIN_SECONDS = 5.0


def eventually(
    check: Callable[[], bool],
    seconds: float = 10.0,
    interval: float = 0.2,
    message: str | Callable[[], str] = "condition not met in time",
) -> float:
    """Polls `check()` every `interval` seconds until it is true and returns the seconds
    that took; fails the test after `seconds` with `message` (a callable is asked for it
    then, e.g. to show the output the process wrote meanwhile)."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began >= seconds:
            raise AssertionError(message() if callable(message) else message)
        time.sleep(interval)
    return time.monotonic() - began


def seconds_until(condition: Callable[[], bool], limit: float = SEEN_WITHIN_SECONDS) -> float:
    """How long `condition` took to hold (polled every 20 ms); fails past `limit`."""
    began = time.monotonic()
    return eventually(
        condition, limit, 0.02, lambda: f"not seen after {time.monotonic() - began:.1f} s"
    )
