"""Readiness: health follows whether the store can serve, while the process stays up."""

from __future__ import annotations

import logging
import threading

from grpc_health.v1 import health, health_pb2

from service.grpc_api.auth import ENTITLEMENT_SERVICE, EVENT_SERVICE, OFFER_SERVICE
from storage.deadline import DeadlineExceeded, deadline_in
from storage.repository import AccountRepository, StoreError

log = logging.getLogger(__name__)

# Services whose health is reported ("" is the server as a whole).
SERVING_SERVICES = ("", ENTITLEMENT_SERVICE, OFFER_SERVICE, EVENT_SERVICE)


class ReadinessMonitor:
    """Probes the store every interval and reports health NOT_SERVING while it cannot
    serve, SERVING again when it recovers. The process stays up meanwhile, so its cache
    keeps serving what it can (stale-if-error)."""

    def __init__(
        self,
        repository: AccountRepository,
        health_servicer: health.HealthServicer,
        interval_seconds: float,
        store_timeout_seconds: float,
    ) -> None:
        self._repository = repository
        self._health = health_servicer
        self._interval = interval_seconds
        self._store_timeout = store_timeout_seconds
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="readiness", daemon=True)
        self.ready = True

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=self._interval + self._store_timeout + 1)

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                with deadline_in(self._store_timeout):
                    self._repository.check()
                ready = True
            except (StoreError, DeadlineExceeded):
                ready = False
            if ready != self.ready:
                self.ready = ready
                log.warning("store %s", "recovered: serving" if ready else "unreachable")
                status = (
                    health_pb2.HealthCheckResponse.SERVING
                    if ready
                    else health_pb2.HealthCheckResponse.NOT_SERVING
                )
                for name in SERVING_SERVICES:
                    self._health.set(name, status)
