"""Single flight: concurrent calls for the same key share one execution, so a burst of
cache misses for one user causes one store read."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from storage.deadline import DeadlineExceeded

T = TypeVar("T")


@dataclass
class _Call(Generic[T]):
    done: threading.Event = field(default_factory=threading.Event)
    result: T | None = None
    error: BaseException | None = None


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, _Call[T]] = {}

    def do(self, key: str, fn: Callable[[str], T], timeout: float | None) -> T:
        """fn(key), or the result (or error) of the call for `key` already running.
        A follower waits at most `timeout` seconds (DeadlineExceeded after that)."""
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = self._calls[key] = _Call()
        if leader:
            try:
                call.result = fn(key)
                return call.result
            except BaseException as error:
                call.error = error
                raise
            finally:
                with self._lock:
                    del self._calls[key]
                call.done.set()
        if not call.done.wait(timeout):
            raise DeadlineExceeded("waited too long for a concurrent store read")
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result
