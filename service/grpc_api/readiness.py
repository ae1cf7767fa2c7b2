"""Readiness: health follows whether the store can serve - reads, and writes where the
backend can tell (storage.repository.ChecksWrites) - while the process stays up."""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health, health_pb2

from service.domain.deadlines import within_store_deadline
from service.grpc_api.auth import ENTITLEMENT_SERVICE, EVENT_SERVICE, OFFER_SERVICE
from service.usecases.store_calls import StoreCalls
from storage.repository import AccountRepository, check_store

log = logging.getLogger(__name__)

# Services whose health is reported ("" is the server as a whole).
SERVING_SERVICES = ("", ENTITLEMENT_SERVICE, OFFER_SERVICE, EVENT_SERVICE)


class ReadinessMonitor:
    """Probes the store every interval and reports health NOT_SERVING while it cannot
    serve, SERVING again when it recovers. A store that answers reads but could not take
    a write (a read-only file, a full disk) cannot serve either. The process stays up
    meanwhile, so its cache keeps serving what it can (stale-if-error). Any failure of the
    probe, expected or not, means not ready: the monitor itself never stops before the
    server does."""

    def __init__(
        self,
        repository: AccountRepository,
        health_servicer: health.aio.HealthServicer,
        store: StoreCalls,
        interval_seconds: float,
        store_timeout_seconds: float,
    ) -> None:
        self._repository = repository
        self._health = health_servicer
        self._store = store
        self._interval = interval_seconds
        self._store_timeout = store_timeout_seconds
        self._task: asyncio.Task[None] | None = None
        self.ready = True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="readiness")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _check(self) -> None:
        with within_store_deadline(self._store_timeout):
            check_store(self._repository, writable=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._store.run(self._store_timeout, self._check)
                ready, cause = True, ""
            except Exception as error:  # any failure: not ready, and say why
                ready, cause = False, f"{type(error).__name__}: {error}"
            if ready != self.ready:
                self.ready = ready
                if ready:
                    log.warning("store recovered: serving")
                else:
                    log.warning("store unreachable: not serving (%s)", cause)
                await set_health(self._health, serving=ready)


async def set_health(servicer: health.aio.HealthServicer, *, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in SERVING_SERVICES:
        await servicer.set(name, status)
