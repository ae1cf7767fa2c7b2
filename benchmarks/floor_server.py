"""The floor: a server of the service's architecture whose handlers do no work.

    python -m benchmarks.floor_server --kind sync|aio --workers N [--port P] [--host H]

Same worker model as `entitlements serve` (N processes forked before any gRPC object
exists, sharing the port with SO_REUSEPORT), the service's channel options
(`server_options(settings)`) and admission bound (`max_concurrent_rpcs(settings)`),
settings read from the same ENTITLEMENTS_* environment; no interceptors. The handlers of
EntitlementService and OfferService return a constant response of realistic size, built
once from real decisions for the benchmark users and serialized at startup (requests
are not parsed either). Whatever the real server takes beyond this floor is the
service's own cost; the floor is the Python gRPC framework's.

Two kinds of floor, which differ only in the serving model:
- `aio`: the service's own server, `build_aio_server(settings)` (grpc.aio), on the
  service's event loop (`new_event_loop()`: uvloop where it is installed);
- `sync`: grpcio's thread-pool server (`grpc.server` with `settings.threads` handler
  threads), the service's serving model before grpc.aio.
Whichever is faster in a run is the floor the load tool compares with.

It prints `floor: serving on HOST:PORT (N workers, pids ...; KIND ...)` once every worker
serves, and drains on SIGTERM or SIGINT like the real server.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import multiprocessing
import os
import queue
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from service.config import Settings

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
STARTUP_TIMEOUT_SECONDS = 60.0
PR_SET_PDEATHSIG = 1
# A batch of this many queries, the most BatchGetEntitlements accepts.
BATCH_SIZE = 100
OFFERS_MARKET = "US"
# The users and feature the constant answers are decided for (benchmarks.data names:
# block 0). Load tools that send one fixed request send these, so that the service's
# answer is the floor's constant.
ENTITLEMENT_USER = "u00000-active"
ENTITLEMENT_FEATURE = "ad_free_playback"
OFFERS_USER = "u00000-free"
ENTITLEMENT_SERVICE = "entitlements.v1.EntitlementService"
OFFER_SERVICE = "entitlements.v1.OfferService"
SYNC = "sync"
AIO = "aio"
KINDS = (SYNC, AIO)

# {service: {method: serialized response}}
Payloads = Mapping[str, Mapping[str, bytes]]


@dataclasses.dataclass(frozen=True)
class ConstantResponses:
    get_entitlement: Any
    list_entitlements: Any
    batch_get_entitlements: Any
    get_offers: Any


def batch_queries() -> list[tuple[str, str]]:
    """The (user_id, feature_id) pairs of the constant batch: the users of block 0 (one
    of each demo situation) and the catalog's features, cycled."""
    from benchmarks.data import SITUATIONS, bench_user_ids
    from service.catalog import load_catalog

    features = list(load_catalog().features)
    ids = bench_user_ids(len(SITUATIONS))
    return [(ids[i % len(ids)], features[i % len(features)]) for i in range(BATCH_SIZE)]


def constant_responses(now: datetime | None = None) -> ConstantResponses:
    """Responses as the real server builds them for typical users: an active Premium
    user's entitlement, a batch of 100 entitlements of mixed users, and the offers of a
    free user in the US on the web (the common paywall case)."""
    from benchmarks.data import user_states
    from entitlements.v1 import entitlement_service_pb2
    from service.catalog import load_catalog
    from service.domain.decisions import decide_entitlement, decide_offers
    from service.domain.rules import Platform
    from service.grpc_api import convert

    now = now or datetime.now(UTC)
    catalog = load_catalog()
    states = user_states(1, now)
    features = list(catalog.features)
    active = states[ENTITLEMENT_USER]
    single = decide_entitlement(catalog, active, ENTITLEMENT_FEATURE, now)
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
    batch = entitlement_service_pb2.BatchGetEntitlementsResponse(
        entitlements=[
            convert.entitlement_to_proto(decide_entitlement(catalog, states[user], feature, now))
            for user, feature in batch_queries()
        ],
        catalog_version=catalog.version,
    )
    offers = convert.offers_to_proto(
        decide_offers(catalog, states[OFFERS_USER], OFFERS_MARKET, Platform.WEB, now),
        False,
        catalog.version,
    )
    return ConstantResponses(get, listed, batch, offers)


def serialized_responses() -> dict[str, dict[str, bytes]]:
    """The constant responses, serialized: {service: {method: bytes}}."""
    responses = constant_responses()
    return {
        ENTITLEMENT_SERVICE: {
            "GetEntitlement": responses.get_entitlement.SerializeToString(),
            "ListEntitlements": responses.list_entitlements.SerializeToString(),
            "BatchGetEntitlements": responses.batch_get_entitlements.SerializeToString(),
        },
        OFFER_SERVICE: {"GetOffers": responses.get_offers.SerializeToString()},
    }


def _register(server: Any, payloads: Payloads, handler: Callable[[bytes], Any]) -> None:
    """Registers every method of `payloads` on a grpc.Server or grpc.aio.Server as
    `handler(payload)`, with no (de)serializers (bytes in, the payload's bytes out), both
    as generic and as registered handlers, as the service's `register` does."""
    import grpc

    for service, methods in payloads.items():
        handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
            name: grpc.unary_unary_rpc_method_handler(handler(payload))
            for name, payload in methods.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        server.add_registered_method_handlers(service, handlers)


def _bind(server: Any, settings: Settings) -> None:
    if server.add_insecure_port(f"{settings.host}:{settings.port}") == 0:
        raise OSError(f"cannot bind {settings.host}:{settings.port}")


def _sync_constant(payload: bytes) -> Callable[[bytes, Any], bytes]:
    def handler(request: bytes, context: Any) -> bytes:
        return payload

    return handler


def _aio_constant(payload: bytes) -> Callable[[bytes, Any], Any]:
    async def handler(request: bytes, context: Any) -> bytes:
        return payload

    return handler


def _sync_worker(settings: Settings, slot: int, ready: Any) -> None:
    """A sync floor worker: grpcio's thread-pool server, the service's options."""
    from concurrent import futures

    import grpc

    from service.grpc_api.server import max_concurrent_rpcs, server_options

    payloads = serialized_responses()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.threads),
        options=server_options(settings),
        maximum_concurrent_rpcs=max_concurrent_rpcs(settings),
    )
    _register(server, payloads, _sync_constant)
    _bind(server, settings)
    server.start()
    ready.put((slot, os.getpid()))
    signal.sigwait(STOP_SIGNALS)
    server.stop(settings.shutdown_grace_seconds).wait()


def _aio_worker(settings: Settings, slot: int, ready: Any) -> None:
    """An aio floor worker: the service's grpc.aio server on the service's event loop."""
    from service.grpc_api.event_loop import new_event_loop

    payloads = serialized_responses()

    async def serve() -> None:
        from service.grpc_api.server import build_aio_server

        server = build_aio_server(settings)
        _register(server, payloads, _aio_constant)
        _bind(server, settings)
        await server.start()
        ready.put((slot, os.getpid()))
        # The stop signals stay blocked in every thread (inherited): wait in another one.
        await asyncio.get_running_loop().run_in_executor(None, signal.sigwait, STOP_SIGNALS)
        await server.stop(settings.shutdown_grace_seconds)

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(serve())


WORKERS: dict[str, Callable[[Settings, int, Any], None]] = {
    SYNC: _sync_worker,
    AIO: _aio_worker,
}


def describe(kind: str, settings: Settings) -> str:
    """The serving model of a floor kind, as its banner names it."""
    if kind == SYNC:
        return f"sync grpc.server, {settings.threads} threads"
    from service.grpc_api.event_loop import loop_kind

    return f"aio grpc.aio on {loop_kind()}"


def _worker_main(kind: str, settings: Settings, slot: int, ready: Any) -> None:
    """Runs in a forked child with the stop signals blocked (inherited)."""
    _stop_when_parent_dies()
    WORKERS[kind](settings, slot, ready)


def _stop_when_parent_dies() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)


def serve(settings: Settings, workers: int, kind: str = AIO) -> int:
    """Forks the workers of `kind`, announces the port, waits for a stop signal, drains."""
    from service.grpc_api.ports import reserve_port

    if kind not in WORKERS:
        raise ValueError(f"unknown floor kind {kind!r} (one of {', '.join(KINDS)})")
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    reservation = None
    if settings.port == 0:
        reservation = reserve_port(settings.host)
        settings = dataclasses.replace(settings, port=reservation.getsockname()[1])
    context = multiprocessing.get_context("fork")
    ready: Any = context.Queue()
    processes = [
        context.Process(
            target=_worker_main, args=(kind, settings, slot, ready), name=f"floor-{kind}-{slot}"
        )
        for slot in range(workers)
    ]
    try:
        for process in processes:
            process.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        waiting = set(range(workers))
        while waiting:
            try:
                slot, _pid = ready.get(timeout=0.2)
                waiting.discard(slot)
            except queue.Empty:
                if time.monotonic() > deadline or any(not p.is_alive() for p in processes):
                    print(f"floor: a {kind} worker failed to start", file=sys.stderr, flush=True)
                    return 1
        pids = ", ".join(str(p.pid) for p in processes)
        print(
            f"floor: serving on {settings.host}:{settings.port} ({workers} workers, "
            f"pids {pids}; {describe(kind, settings)})",
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
    parser.add_argument(
        "--kind", choices=KINDS, default=AIO, help="serving model (default: aio, the service's)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument("--workers", type=int, default=0, help="0: one per core")
    args = parser.parse_args(argv)
    settings = Settings.load(host=args.host, port=args.port, workers=args.workers)
    from service.grpc_api.workers import worker_count

    return serve(settings, worker_count(settings), args.kind)


if __name__ == "__main__":
    sys.exit(main())
