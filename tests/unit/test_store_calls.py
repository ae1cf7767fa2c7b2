"""StoreCalls: a cancelled caller is cancelled, even when its call completes at that very
moment (Python 3.11's asyncio.wait_for returned the result instead, and the loops that
call the store - readiness, the change feed - then never ended on shutdown)."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.domain.deadlines import store_seconds_left, within_rpc_deadline
from service.domain.errors import DeadlineExceeded, StoreUnavailable
from service.usecases.store_calls import StoreCalls
from storage.observers import transaction_aborted


def test_a_cancel_that_meets_the_calls_completion_still_cancels() -> None:
    calls = StoreCalls(threads=1)

    async def scenario() -> None:
        task = asyncio.create_task(calls.run(5.0, lambda: "answer"))
        await asyncio.sleep(0)  # the task now waits for the store thread
        # Block the loop while the thread completes the call: its completion and the
        # cancel below are handled in the same loop iteration.
        time.sleep(0.2)  # noqa: ASYNC251 (blocking the loop is the point)
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


def test_a_use_case_call_past_the_store_timeout_is_store_unavailable() -> None:
    """The store timeout ran out, not the RPC: the store is unavailable (UNAVAILABLE)."""
    calls = StoreCalls(threads=1)

    async def scenario() -> None:
        with within_rpc_deadline(5.0), pytest.raises(StoreUnavailable):
            await calls.call("sleep", 0.05, time.sleep, 1.0)

    try:
        asyncio.run(scenario())
    finally:
        calls.close()


def test_a_use_case_call_past_the_rpc_deadline_is_deadline_exceeded() -> None:
    """The RPC's deadline ran out first: the RPC is out of time (DEADLINE_EXCEEDED), and
    the store thread had that deadline too (the store call's own checks see it)."""
    calls = StoreCalls(threads=1)
    seen: list[float | None] = []

    def slow() -> None:
        seen.append(store_seconds_left())
        time.sleep(1.0)

    async def scenario() -> None:
        with within_rpc_deadline(0.1), pytest.raises(DeadlineExceeded):
            await calls.call("slow", 5.0, slow)

    try:
        asyncio.run(scenario())
    finally:
        calls.close()
    assert seen
    assert seen[0] is not None
    assert 0 < seen[0] <= 0.1


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, BaseException | None]] = []
        self.aborts: list[str] = []

    def store_call(self, operation: str, seconds: float, error: BaseException | None) -> None:
        self.calls.append((operation, error))

    def transaction_aborted(self, backend: str) -> None:
        self.aborts.append(backend)


def test_what_a_backend_reports_reaches_the_observer_of_its_call() -> None:
    recorder = Recorder()
    calls = StoreCalls(threads=1, observer=recorder)

    def apply() -> str:
        transaction_aborted("spanner")  # as a backend reports an aborted attempt
        return "applied"

    try:
        assert asyncio.run(calls.call("apply", 1.0, apply)) == "applied"
    finally:
        calls.close()
    assert recorder.calls == [("apply", None)]
    assert recorder.aborts == ["spanner"]
    # Outside an observed call a report goes nowhere (and never fails).
    transaction_aborted("spanner")
    assert recorder.aborts == ["spanner"]
