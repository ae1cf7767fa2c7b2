"""Wrapped method handlers, made once per method: a server interceptor that wraps the handler
of a method would otherwise build a new wrapper on every call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import grpc

# Not subscriptable at run time: an alias for annotations only.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class HandlerCache:
    """The wrapped handler of each method, made by `wrap(method, handler)` the first time
    and again whenever the server hands over a different handler for the method."""

    def __init__(self, wrap: Callable[[str, Handler], Handler]) -> None:
        self._wrap = wrap
        self._handlers: dict[str, tuple[Handler, Handler]] = {}

    def wrapped(self, method: str, handler: Handler) -> Handler:
        cached = self._handlers.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._handlers[method] = (handler, wrapped)
        return wrapped
