"""The floor: a server of the service's architecture whose handlers do no work.

    python -m benchmarks.floor_server --workers N [--port P] [--host H]

Same worker model as `entitlements serve` (N processes forked before any gRPC object
exists, sharing the port with SO_REUSEPORT), same `build_grpc_server(settings)` (handler
thread pool, maximum_concurrent_rpcs, channel options; settings read from the same
ENTITLEMENTS_* environment), but no interceptors, and EntitlementService / OfferService
handlers that return a prebuilt constant response of realistic size (built once from real
decisions for the benchmark users). Whatever the real server takes beyond this floor is
the service's own cost; the floor is the Python gRPC framework's.

It prints `floor: serving on HOST:PORT (...)` once every worker serves, and drains on
SIGTERM or SIGINT like the real server.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import multiprocessing
import os
import queue
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from service.config import Settings

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
STARTUP_TIMEOUT_SECONDS = 60.0
PR_SET_PDEATHSIG = 1
# A batch of this many queries, the most BatchGetEntitlements accepts.
BATCH_SIZE = 100
OFFERS_MARKET = "US"


@dataclasses.dataclass(frozen=True)
class ConstantResponses:
    get_entitlement: Any
    list_entitlements: Any
    batch_get_entitlements: Any
    get_offers: Any


def constant_responses(now: datetime | None = None) -> ConstantResponses:
    """Responses as the real server builds them for typical users: an active Premium
    user's entitlement, a batch of 100 entitlements of mixed users, and the offers of a
    free user in the US on the web (the common paywall case)."""
    from benchmarks.data import bench_user_ids, user_id, user_states
    from entitlements.v1 import entitlement_service_pb2
    from service.catalog import load_catalog
    from service.domain.decisions import decide_entitlement, decide_offers
    from service.domain.rules import Platform
    from service.grpc_api import convert

    now = now or datetime.now(UTC)
    catalog = load_catalog()
    states = user_states(1, now)
    features = list(catalog.features)
    active = states[user_id(0, "active")]
    single = decide_entitlement(catalog, active, "ad_free_playback", now)
    get = entitlement_service_pb2.GetEntitlementResponse(
        entitlement=convert.entitlement_to_proto(single), catalog_version=catalog.version
    )
    listed = entitlement_service_pb2.ListEntitlementsResponse(
        entitlements=[
            convert.entitlement_to_proto(decide_entitlement(catalog, active, f, now))
            for f in features
        ],
        catalog_version=catalog.version,
    )
    ids = bench_user_ids(len(states))
    batch = entitlement_service_pb2.BatchGetEntitlementsResponse(
        entitlements=[
            convert.entitlement_to_proto(
                decide_entitlement(
                    catalog, states[ids[i % len(ids)]], features[i % len(features)], now
                )
            )
            for i in range(BATCH_SIZE)
        ],
        catalog_version=catalog.version,
    )
    free = states[user_id(0, "free")]
    offers = convert.offers_to_proto(
        decide_offers(catalog, free, OFFERS_MARKET, Platform.WEB, now), False, catalog.version
    )
    return ConstantResponses(get, listed, batch, offers)


def _serve_worker(settings: Settings, slot: int, ready: Any) -> None:
    """One floor worker; runs in a forked child with the stop signals blocked."""
    from concurrent import futures

    import grpc

    from entitlements.v1 import entitlement_service_pb2_grpc, offer_service_pb2_grpc
    from service.grpc_api.server import max_concurrent_rpcs, server_options

    _stop_when_parent_dies()
    responses = constant_responses()

    class FloorEntitlements(entitlement_service_pb2_grpc.EntitlementServiceServicer):
        def GetEntitlement(self, request: Any, context: grpc.ServicerContext) -> Any:
            return responses.get_entitlement

        def ListEntitlements(self, request: Any, context: grpc.ServicerContext) -> Any:
            return responses.list_entitlements

        def BatchGetEntitlements(self, request: Any, context: grpc.ServicerContext) -> Any:
            return responses.batch_get_entitlements

    class FloorOffers(offer_service_pb2_grpc.OfferServiceServicer):
        def GetOffers(self, request: Any, context: grpc.ServicerContext) -> Any:
            return responses.get_offers

    # The sync thread-pool server (the service's serving model before grpc.aio): the same
    # options and admission bound as the service, a handler thread pool.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.threads),
        options=server_options(settings),
        maximum_concurrent_rpcs=max_concurrent_rpcs(settings),
    )
    entitlement_service_pb2_grpc.add_EntitlementServiceServicer_to_server(
        FloorEntitlements(), server
    )
    offer_service_pb2_grpc.add_OfferServiceServicer_to_server(FloorOffers(), server)
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise OSError(f"cannot bind {settings.host}:{settings.port}")
    server.start()
    ready.put((slot, os.getpid(), port))
    signal.sigwait(STOP_SIGNALS)
    server.stop(settings.shutdown_grace_seconds).wait()


def _stop_when_parent_dies() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)


def serve(settings: Settings, workers: int) -> int:
    """Forks the workers, announces the port, waits for a stop signal, drains."""
    from service.grpc_api.workers import reserve_port

    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    reservation = None
    if settings.port == 0:
        reservation = reserve_port(settings.host)
        settings = dataclasses.replace(settings, port=reservation.getsockname()[1])
    context = multiprocessing.get_context("fork")
    ready: Any = context.Queue()
    processes = [
        context.Process(target=_serve_worker, args=(settings, slot, ready), name=f"floor-{slot}")
        for slot in range(workers)
    ]
    try:
        for process in processes:
            process.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        waiting = set(range(workers))
        while waiting:
            try:
                slot, _pid, _port = ready.get(timeout=0.2)
                waiting.discard(slot)
            except queue.Empty:
                if time.monotonic() > deadline or any(not p.is_alive() for p in processes):
                    print("floor: a worker failed to start", file=sys.stderr, flush=True)
                    return 1
        pids = ", ".join(str(p.pid) for p in processes)
        print(
            f"floor: serving on {settings.host}:{settings.port} ({workers} workers, pids {pids})",
            flush=True,
        )
        signal.sigwait(STOP_SIGNALS)
        return 0
    finally:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        for process in processes:
            process.join(settings.shutdown_grace_seconds + 5)
            if process.is_alive():
                process.kill()
                process.join(5)
        if reservation is not None:
            reservation.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument("--workers", type=int, default=0, help="0: one per core")
    args = parser.parse_args(argv)
    settings = Settings.load(host=args.host, port=args.port, workers=args.workers)
    from service.grpc_api.workers import worker_count

    return serve(settings, worker_count(settings))


if __name__ == "__main__":
    sys.exit(main())
