"""Single flight: concurrent calls for the same key share one execution, so a burst of
cache misses for one user causes one store read. Runs on the event loop: waiters hold
no thread, only a future."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Flight(Generic[T]):
    task: asyncio.Task[T]
    # time.monotonic() when it began reading; None while it waits for the one before it.
    started: float | None = None


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._running: dict[str, _Flight[T]] = {}
        # Per key, the call that starts when the running one ends, for callers that may
        # not use a read begun before they arrived.
        self._next: dict[str, _Flight[T]] = {}
        # Callers that joined a call another caller started (instead of starting one).
        self.waits = 0

    async def do(
        self, key: str, start: Callable[[], Awaitable[T]], *, started_after: float = 0.0
    ) -> T:
        """The result (or error) of `start()`, shared with every concurrent caller for
        `key`. A caller passing `started_after` (a time.monotonic() reading: it must see
        every write before that moment) shares only a call begun at that time or later:
        when the running call began earlier, it waits for the next one, which all such
        callers share. So concurrent fresh reads of a key cost at most two calls at once.

        Cancelling one caller (its deadline passed) does not cancel the shared call: the
        others keep waiting for it, and it ends within its own store budget."""
        running = self._running.get(key)
        if running is None:
            flight = self._begin(key, start)
        elif running.started is not None and running.started >= started_after:
            flight = running
            self.waits += 1
        else:
            waiting = self._next.get(key)
            if waiting is not None:
                self.waits += 1
            flight = waiting or self._after(key, running, start)
        return await asyncio.shield(flight.task)

    def _begin(self, key: str, start: Callable[[], Awaitable[T]]) -> _Flight[T]:
        flight = _Flight(asyncio.ensure_future(start()), time.monotonic())
        self._running[key] = flight
        flight.task.add_done_callback(lambda _: self._finished(key, flight))
        return flight

    def _after(
        self, key: str, previous: _Flight[T], start: Callable[[], Awaitable[T]]
    ) -> _Flight[T]:
        async def when_previous_ends() -> T:
            await asyncio.wait((previous.task,))
            del self._next[key]
            flight.started = time.monotonic()
            self._running[key] = flight
            return await start()

        flight: _Flight[T] = _Flight(asyncio.ensure_future(when_previous_ends()))
        self._next[key] = flight
        flight.task.add_done_callback(lambda _: self._finished(key, flight))
        return flight

    def _finished(self, key: str, flight: _Flight[T]) -> None:
        if self._running.get(key) is flight:
            del self._running[key]
        if self._next.get(key) is flight:  # ended before it began (cancelled)
            del self._next[key]
        if not flight.task.cancelled():
            flight.task.exception()  # retrieved: every waiter may have given up already
