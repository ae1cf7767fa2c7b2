"""Overload through a real server on loopback (issue 21): a burst of concurrent cache-hit
calls far beyond what one worker answers in time makes its event loop late; the worker
sheds with RESOURCE_EXHAUSTED while it is, counts what it shed and what expired, answers
health throughout, and admits again once the burst has passed. And the bound on streams
per connection: a connection carries at most max_streams_per_connection calls at once."""

from __future__ import annotations

import asyncio
import collections
import socket
import sys
import threading
import time
from pathlib import Path

import grpc

from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import entitlement_service_pb2_grpc
from service.grpc_api.auth import bearer_metadata
from tests.support.faulty import code_of, faulty_server
from tests.support.harness import SERVICE_TOKEN

BURST = 3000
CHANNELS = 8


async def _burst(port: int, calls: int, rpc_timeout: float) -> collections.Counter[str]:
    """`calls` GetEntitlement calls at once over CHANNELS connections; their codes."""
    metadata = bearer_metadata(SERVICE_TOKEN)
    channels = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1), ("i", i)]
        )
        for i in range(CHANNELS)
    ]
    stubs = [entitlement_service_pb2_grpc.EntitlementServiceStub(c) for c in channels]
    codes: collections.Counter[str] = collections.Counter()

    async def one(i: int) -> None:
        request = es.GetEntitlementRequest(user_id=f"hot-{i % 10}", feature_id="shuffle_play")
        try:
            await stubs[i % CHANNELS].GetEntitlement(
                request, metadata=metadata, timeout=rpc_timeout
            )
            codes["OK"] += 1
        except grpc.aio.AioRpcError as error:
            codes[error.code().name] += 1

    try:
        # Connected first: a fresh connection's first streams may exceed the server's
        # limit before its SETTINGS arrive, and be refused (UNAVAILABLE).
        await asyncio.gather(*(c.channel_ready() for c in channels))
        await asyncio.gather(*(one(i) for i in range(calls)))
    finally:
        for channel in channels:
            await channel.close()
    return codes


def test_a_burst_is_answered_or_counted_and_the_worker_recovers(tmp_path: Path) -> None:
    """3,000 calls at once with 1 s deadlines. What this shows about grpc.aio (issue 21's
    finding, docs/OPERATIONS.md "Overload"): most of the burst queues in grpc-core, where
    no Python code runs; the calls that expire there end DEADLINE_EXCEEDED or CANCELLED
    without their handler ever starting, so no server-side count of ours can see them.
    What our code does see, it accounts for exactly; and the worker answers again after."""
    with faulty_server(tmp_path) as server:
        for i in range(10):  # the users are cached: every call of the burst is a hit
            server.get(f"hot-{i}")
        guard, overload = server.running.guard, server.running.overload
        assert guard is not None
        assert overload is not None

        codes = asyncio.run(_burst(server.running.port, BURST, rpc_timeout=1.0))

        seen = (codes, guard.shed_queue_delay, guard.expired, overload.episodes)
        assert sum(codes.values()) == BURST
        assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "CANCELLED"}, seen
        assert guard.shed_queue_delay == codes["RESOURCE_EXHAUSTED"], seen
        assert guard.expired <= codes["DEADLINE_EXCEEDED"], seen
        assert codes["OK"] > 0
        assert server.status() == 1  # health is never shed
        # grpc-core may still be ending the burst's expired calls for a moment: a call
        # just after it can come back CANCELLED on this busy machine.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if code_of(lambda: server.get("hot-1", timeout=1)) is grpc.StatusCode.OK:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the worker did not answer OK within 10 s of the burst")


def test_a_worker_whose_loop_is_late_sheds_counts_and_recovers(tmp_path: Path) -> None:
    """A CPU-bound worker: a thread of the server's process burns CPU in 60 ms slices of
    the GIL (well past the 25 ms target), so the event loop wakes late. Calls are
    refused RESOURCE_EXHAUSTED at once, each counted, while the lag stays above target,
    and admitted again soon after it ends. Before issue 21 none was refused."""
    with faulty_server(tmp_path) as server:
        server.get("hot")
        guard, overload = server.running.guard, server.running.overload
        assert guard is not None
        assert overload is not None
        assert guard.shed_queue_delay == 0
        assert overload.episodes == 0
        stop = threading.Event()

        def burn() -> None:
            while not stop.is_set():
                sum(i * i for i in range(20_000))

        interval = sys.getswitchinterval()
        sys.setswitchinterval(0.06)
        burner = threading.Thread(target=burn)
        codes: collections.Counter[str] = collections.Counter()
        try:
            burner.start()
            time.sleep(0.3)  # the lag has stood above target for an interval
            for _ in range(20):
                codes[code_of(lambda: server.get("hot", timeout=5)).name] += 1
        finally:
            stop.set()
            burner.join()
            sys.setswitchinterval(interval)
        seen = (codes, guard.shed_queue_delay, overload.episodes, overload.max_lag)
        assert overload.episodes >= 1, seen
        assert overload.max_lag > overload.target_seconds, seen
        assert codes["RESOURCE_EXHAUSTED"] > 0, seen
        assert guard.shed_queue_delay == codes["RESOURCE_EXHAUSTED"], seen
        assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, seen
        # Recovery: admitted again within a second or so of the load ending.
        ended = time.monotonic()
        while code_of(lambda: server.get("hot", timeout=5)) is not grpc.StatusCode.OK:
            assert time.monotonic() - ended < 5, "still shedding 5 s after the load ended"
            time.sleep(0.01)


def test_a_connection_carries_at_most_max_streams_per_connection_calls(
    tmp_path: Path,
) -> None:
    with faulty_server(tmp_path, threads=16, max_streams_per_connection=2) as server:
        assert server.status() == 1  # connected: the client knows the server's limit
        server.store.delay_seconds = 0.3
        guard = server.running.guard
        assert guard is not None
        peak = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, guard.in_flight)
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.monotonic()
        futures = [
            server.stub.GetEntitlement.future(
                es.GetEntitlementRequest(user_id=f"stream-{i}", feature_id="shuffle_play"),
                timeout=10,
            )
            for i in range(6)
        ]
        results = [f.result() for f in futures]
        elapsed = time.monotonic() - started
        done.set()
        sampler.join()
        assert all(r.entitlement.user_id.startswith("stream-") for r in results)
        assert peak == 2  # the other four waited on the client's side of the connection
        assert elapsed >= 3 * 0.3 - 0.05  # three rounds of two


def test_without_the_bound_the_same_calls_run_together(tmp_path: Path) -> None:
    """The control of the test above: grpc's default lets all six in at once."""
    with faulty_server(tmp_path, threads=16) as server:
        server.store.delay_seconds = 0.3
        guard = server.running.guard
        assert guard is not None
        futures = [
            server.stub.GetEntitlement.future(
                es.GetEntitlementRequest(user_id=f"stream-{i}", feature_id="shuffle_play"),
                timeout=10,
            )
            for i in range(6)
        ]
        time.sleep(0.15)
        peak = guard.in_flight
        for f in futures:
            f.result()
        assert peak == 6


def test_a_connection_that_never_speaks_http2_is_closed_after_the_handshake_timeout(
    tmp_path: Path,
) -> None:
    """An idle socket is closed after handshake_timeout_seconds (grpc's default held
    such sockets, and their memory, for 120 s)."""
    with faulty_server(tmp_path, handshake_timeout_seconds=0.5) as server:
        with socket.create_connection(("127.0.0.1", server.running.port), timeout=10) as idle:
            started = time.monotonic()
            closed = False
            try:
                while idle.recv(1024):  # the server's own preface (SETTINGS) comes first
                    pass
                closed = True
            except ConnectionResetError:
                closed = True
            waited = time.monotonic() - started
        assert closed
        assert 0.3 < waited < 5
