"""The change stream's follower: a daemon thread that keeps EntitlementService.WatchChanges
open, applies each message to the near cache, and reconnects after any end (with jittered
backoff), resuming from the last position. Nothing waits for it: until its first message
the cache serves nothing, and reads go to the server."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Sequence
from typing import Any

import grpc

from entitlements.v1 import entitlement_service_pb2, entitlement_service_pb2_grpc
from entitlements_client.near_cache import NearCache

log = logging.getLogger(__name__)

FIRST_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 5.0


class ChangeFollower:
    def __init__(
        self,
        stub: entitlement_service_pb2_grpc.EntitlementServiceStub,
        metadata: Sequence[tuple[str, str]],
        cache: NearCache,
    ) -> None:
        self._stub = stub
        self._metadata = tuple(metadata)
        self._cache = cache
        self._closed = threading.Event()
        self._call: Any = None
        self._lock = threading.Lock()
        self.position = ""
        # Counts since start: streams opened, messages, resets received.
        self.connects = 0
        self.messages = 0
        self.resets = 0
        self._thread = threading.Thread(
            target=self._run, name="entitlements-change-stream", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._closed.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = FIRST_BACKOFF_SECONDS
        while not self._closed.is_set():
            try:
                call = self._stub.WatchChanges(
                    entitlement_service_pb2.WatchChangesRequest(position=self.position),
                    metadata=self._metadata,
                    wait_for_ready=True,
                )
                with self._lock:
                    if self._closed.is_set():
                        call.cancel()
                        return
                    self._call = call
                self.connects += 1
                for message in call:
                    self._apply(message)
                    backoff = FIRST_BACKOFF_SECONDS
            except grpc.RpcError as error:
                if self._closed.is_set():
                    return
                code = error.code() if isinstance(error, grpc.Call) else None
                log.info("change stream ended (%s); reconnecting", code)
            except Exception:  # a bug here must not end the following for good
                log.exception("applying the change stream failed; resetting the near cache")
                self._cache.reset()
                self.position = ""
            self._closed.wait(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _apply(self, message: entitlement_service_pb2.WatchChangesResponse) -> None:
        cache = self._cache
        if message.reset:
            self.resets += 1
            cache.reset()
        for change in message.changes:
            cache.invalidate(change.user_id, change.consistency_token)
        if message.position:
            self.position = message.position
            # Heard only at a whole batch: a batch split over messages is applied first.
            cache.heard()
        self.messages += 1
