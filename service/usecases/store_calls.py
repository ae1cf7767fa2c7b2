"""Store calls off the event loop: the SQLite and Spanner clients block, so each store
call runs in a bounded thread pool, in a copy of the caller's context (the store
deadline travels with it), and the caller stops waiting when its budget ends."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from storage.deadline import DeadlineExceeded

P = ParamSpec("P")
T = TypeVar("T")


class StoreCalls:
    def __init__(self, threads: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="store")

    async def run(
        self, timeout: float | None, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """fn(*args, **kwargs) in a store thread; DeadlineExceeded once `timeout` seconds
        pass (the thread's own store deadline, set in the copied context, ends the call
        there too)."""
        context = contextvars.copy_context()
        call = functools.partial(context.run, fn, *args, **kwargs)
        future = asyncio.get_running_loop().run_in_executor(self._executor, call)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as error:
            raise DeadlineExceeded("the store call did not finish within its budget") from error

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
