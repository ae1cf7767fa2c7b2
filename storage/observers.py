"""What an observer of store calls is told (the transport's metrics and tracing implement
it; storage and the use cases know nothing of them): each call's operation, duration and
outcome, told by the store pool that runs it (service.usecases.store_calls), and the
events inside a call that only a backend sees (a read-write transaction aborted and re-run),
told by the backend to the observer of the call it serves.

The observer travels with the call in a context variable (the store pool runs each call
in a copy of the caller's context with the observer set), so a backend needs no wiring:
outside an observed call, what it reports goes nowhere. Observers are called in the
store thread, so they must be cheap and thread-safe; an error of theirs is swallowed
(observing never fails a call)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Protocol


class StoreCallObserver(Protocol):
    def store_call(self, operation: str, seconds: float, error: BaseException | None) -> None:
        """One store call ended after `seconds`, with `error` (None: it succeeded)."""

    def transaction_aborted(self, backend: str) -> None:
        """A read-write transaction of the current call aborted and is re-run."""


_observer: contextvars.ContextVar[StoreCallObserver | None] = contextvars.ContextVar(
    "store_call_observer", default=None
)


@contextlib.contextmanager
def observed_by(observer: StoreCallObserver | None) -> Iterator[None]:
    """Inside the block, what backends report goes to `observer`."""
    token = _observer.set(observer)
    try:
        yield
    finally:
        _observer.reset(token)


def transaction_aborted(backend: str) -> None:
    """Told by a backend: the current call's transaction aborted and is re-run."""
    observer = _observer.get()
    if observer is not None:
        with contextlib.suppress(Exception):
            observer.transaction_aborted(backend)
