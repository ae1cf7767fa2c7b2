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
    message: str = "condition not met in time",
) -> None:
    """Returns once `check()` is true; fails the test after `seconds`."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, message
        time.sleep(interval)


def seconds_until(condition: Callable[[], bool], limit: float = SEEN_WITHIN_SECONDS) -> float:
    """How long `condition` took to hold (polled every 20 ms); fails past `limit`."""
    began = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - began
        assert elapsed < limit, f"not seen after {elapsed:.1f} s"
        time.sleep(0.02)
    return time.monotonic() - began
