"""What every child process of `entitlements serve` (workers, the feed reader) shares:
the stop signals, a life tied to the supervisor's, and a one-line account of why it
failed to start."""

from __future__ import annotations

import ctypes
import logging
import os
import signal

log = logging.getLogger(__name__)

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
PR_SET_PDEATHSIG = 1


def stop_when_parent_dies() -> None:
    """Linux: SIGTERM this process when the supervisor dies (even by kill -9), so no
    orphan keeps serving a port (or a feed) nobody supervises."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        log.warning("cannot tie the child's life to the supervisor's")
    if os.getppid() == 1:  # the supervisor died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def describe_error(error: BaseException, expected: tuple[type[BaseException], ...] = ()) -> str:
    """One line: the message of an expected error, else its type and message."""
    text = " ".join(str(error).split())
    if isinstance(error, expected) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
