"""Store calls off the event loop: the SQLite and Spanner clients block, so each store
call runs in a bounded thread pool, in a copy of the caller's context (the store
deadline and the observer travel with it), and the caller stops waiting when its budget
ends.

Every use case makes its store calls through one helper, `StoreCalls.call`: the store's
share of the RPC's time (service.domain.deadlines.store_budget), the hop to a store
thread, and the one reading of a spent budget: when the store timeout ran out the store
is unavailable, when the RPC's deadline did the call is DEADLINE_EXCEEDED. Loops of
their own (readiness, the change feed) set their deadline and use `run`.

An observer (storage.observers.StoreCallObserver: the transport layer's metrics and
tracing implement it; this layer knows nothing of them) is told the operation, duration
and outcome of every call, and what the backend reports during it."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from service.domain.deadlines import StoreBudget, store_budget
from service.domain.errors import DeadlineExceeded, StoreUnavailable
from storage.observers import StoreCallObserver, observed_by

P = ParamSpec("P")
T = TypeVar("T")


def operation_name(fn: Callable[..., object]) -> str:
    """The operation a store call performs: the called function's name ("load",
    "redeem", "check" for `_check`), or "call" when it has none."""
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", None)
    return str(name).lstrip("_") or "call" if name else "call"


class StoreCalls:
    def __init__(self, threads: int, observer: StoreCallObserver | None = None) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="store")
        self.observer = observer

    async def call(
        self,
        operation: str,
        store_timeout: float | None,
        fn: Callable[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """The use cases' store hop: fn(*args, **kwargs) in a store thread, within
        min(store_timeout, what the RPC has left) (None: the RPC's time alone), observed
        as `operation` (the use case's name: "grant", "redeem"...)."""

        def hop(seconds: float | None) -> Awaitable[T]:
            return self._observed(operation, seconds, fn, *args, **kwargs)

        return await within_store_budget(store_timeout, hop)

    async def run(
        self, timeout: float | None, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """fn(*args, **kwargs) in a store thread, observed as fn's operation_name;
        DeadlineExceeded once `timeout` seconds pass (the thread's own store deadline, set
        in the copied context, ends the call there too)."""
        return await self._observed(operation_name(fn), timeout, fn, *args, **kwargs)

    async def _observed(
        self,
        operation: str,
        timeout: float | None,
        fn: Callable[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        observer = self.observer
        if observer is None:
            return await self._run(timeout, fn, *args, **kwargs)
        started = time.perf_counter()
        try:
            result = await self._run(timeout, fn, *args, **kwargs)
        except BaseException as error:
            observer.store_call(operation, time.perf_counter() - started, error)
            raise
        observer.store_call(operation, time.perf_counter() - started, None)
        return result

    async def _run(
        self, timeout: float | None, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        context = contextvars.copy_context()
        observer = self.observer

        def observed() -> T:
            with observed_by(observer):
                return fn(*args, **kwargs)

        call = functools.partial(context.run, observed)
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


async def within_store_budget(
    store_timeout: float | None, work: Callable[[float | None], Awaitable[T]]
) -> T:
    """`work(seconds)` (store calls awaited in a store thread), within the store's share
    of the RPC's time. When that share runs out, the store timeout's running out means
    the store is unavailable (StoreUnavailable); the RPC deadline's, that the RPC is out
    of time (DeadlineExceeded)."""
    budget: StoreBudget | None = None
    try:
        with store_budget(store_timeout) as budget:
            return await work(budget.seconds)
    except DeadlineExceeded as error:
        if budget is not None and not budget.bound_by_rpc:
            raise StoreUnavailable("the store did not answer in time") from error
        raise
