"""StoreCalls: a cancelled caller is cancelled, even when its call completes at that very
moment (Python 3.11's asyncio.wait_for returned the result instead, and the loops that
call the store - readiness, the change feed - then never ended on shutdown)."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.domain.errors import DeadlineExceeded
from service.usecases.store_calls import StoreCalls


def test_a_cancel_that_meets_the_calls_completion_still_cancels() -> None:
    calls = StoreCalls(threads=1)

    async def scenario() -> None:
        task = asyncio.create_task(calls.run(5.0, lambda: "answer"))
        await asyncio.sleep(0)  # the task now waits for the store thread
        # Block the loop while the thread completes the call: its completion and the
        # cancel below are handled in the same loop iteration.
        time.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(scenario())
    finally:
        calls.close()


def test_a_call_past_its_timeout_is_deadline_exceeded() -> None:
    calls = StoreCalls(threads=1)

    async def scenario() -> None:
        with pytest.raises(DeadlineExceeded):
            await calls.run(0.05, time.sleep, 1.0)

    try:
        asyncio.run(scenario())
    finally:
        calls.close()
