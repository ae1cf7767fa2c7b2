"""Store calls off the event loop: the SQLite and Spanner clients block, so each store
call runs in a bounded thread pool, in a copy of the caller's context (the store
deadline travels with it), and the caller stops waiting when its budget ends.

An observer (a Protocol: the transport layer's metrics implement it; this layer knows
nothing of them) is told the operation, duration and outcome of every call."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, Protocol, TypeVar

from service.domain.errors import DeadlineExceeded

P = ParamSpec("P")
T = TypeVar("T")


class StoreCallObserver(Protocol):
    def store_call(self, operation: str, seconds: float, error: BaseException | None) -> None:
        """One store call ended after `seconds`, with `error` (None: it succeeded)."""


def operation_name(fn: Callable[..., object]) -> str:
    """The operation a store call performs: the called function's name ("load",
    "redeem", "check" for `_check`), or "call" when it has none."""
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", None)
    return str(name).lstrip("_") or "call" if name else "call"


class StoreCalls:
    def __init__(self, threads: int, observer: StoreCallObserver | None = None) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="store")
        self.observer = observer

    async def run(
        self, timeout: float | None, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """fn(*args, **kwargs) in a store thread; DeadlineExceeded once `timeout` seconds
        pass (the thread's own store deadline, set in the copied context, ends the call
        there too)."""
        observer = self.observer
        if observer is None:
            return await self._run(timeout, fn, *args, **kwargs)
        started = time.perf_counter()
        try:
            result = await self._run(timeout, fn, *args, **kwargs)
        except BaseException as error:
            observer.store_call(operation_name(fn), time.perf_counter() - started, error)
            raise
        observer.store_call(operation_name(fn), time.perf_counter() - started, None)
        return result

    async def _run(
        self, timeout: float | None, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        context = contextvars.copy_context()
        call = functools.partial(context.run, fn, *args, **kwargs)
        future = asyncio.get_running_loop().run_in_executor(self._executor, call)
        # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation
        # that arrives as the call completes (it returns the result), and a loop that
        # calls the store (readiness, the change feed) then never ends on cancel.
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError as error:
            raise DeadlineExceeded("the store call did not finish within its budget") from error

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
