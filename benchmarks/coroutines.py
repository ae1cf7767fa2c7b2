"""Driving the read use cases (coroutines) without an event loop where they cannot wait:
a cache hit never suspends, so its cost is measured without the loop's own."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def completed(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that finishes without suspending; RuntimeError when it
    suspends (it needed the store: not a cache hit)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError("the coroutine suspended: it is not a cache hit")
