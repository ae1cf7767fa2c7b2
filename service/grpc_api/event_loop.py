"""The event loop the gRPC server runs on: uvloop where it is installed (Linux), else
asyncio's own, in a thread of its own so that the process's main thread stays free to
wait for signals (and tests keep a synchronous handle on the server)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from importlib import metadata
from typing import Any, TypeVar

T = TypeVar("T")

try:
    import uvloop
except ImportError:  # pragma: no cover - not Linux or macOS
    uvloop = None  # type: ignore[assignment]


def new_event_loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


def loop_kind() -> str:
    return f"uvloop {metadata.version('uvloop')}" if uvloop is not None else "asyncio"


class LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self, name: str = "event-loop") -> None:
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Runs the coroutine on the loop and waits for its result (from another thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()
