"""Single flight: concurrent calls for the same key share one execution, so a burst of
cache misses for one user causes one store read. Runs on the event loop: waiters hold
no thread, only a future."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._calls: dict[str, asyncio.Task[T]] = {}

    async def do(self, key: str, start: Callable[[], Awaitable[T]]) -> T:
        """The result (or error) of `start()`, or of the call for `key` already running.

        Cancelling one caller (its deadline passed) does not cancel the shared call: the
        others keep waiting for it, and it ends within its own store budget."""
        call = self._calls.get(key)
        if call is None:
            call = asyncio.ensure_future(start())
            self._calls[key] = call
            call.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(call)

    def _finished(self, key: str, call: asyncio.Task[T]) -> None:
        if self._calls.get(key) is call:
            del self._calls[key]
        if not call.cancelled():
            call.exception()  # retrieved: every waiter may have given up already

    def __len__(self) -> int:
        return len(self._calls)
