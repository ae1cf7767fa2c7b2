"""Events of the stores that the service layer may count (metrics), without storage
knowing how: the service registers listeners here at start-up; a backend reports.

Listeners run in the store thread that reports, so they must be cheap and thread-safe,
and must not raise (an error of a listener is swallowed: counting never fails a call)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

TransactionAbortListener = Callable[[str], None]

_abort_listeners: list[TransactionAbortListener] = []


def on_transaction_abort(listener: TransactionAbortListener) -> None:
    """Calls `listener(backend)` each time a read-write transaction aborted and is re-run."""
    if listener not in _abort_listeners:
        _abort_listeners.append(listener)


def transaction_aborted(backend: str) -> None:
    for listener in _abort_listeners:
        with contextlib.suppress(Exception):
            listener(backend)
