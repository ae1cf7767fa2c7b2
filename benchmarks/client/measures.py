"""The measurements of `make bench-client` (benchmarks/client/__main__.py), each on real
servers (`entitlements serve` processes on one SQLite file) and the real client library."""

from __future__ import annotations

import gc
import random
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any

import grpc

from benchmarks.load.h2load import find_h2load, grpc_frame
from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import entitlement_service_pb2_grpc as es_grpc
from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements_client import Entitlement, EntitlementsClient, NearCache
from service.grpc_api.auth import bearer_metadata

FEATURES = ("offline_downloads", "ad_free_playback", "high_fidelity_audio", "shuffle_play")


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": ordered[-1], "n": len(ordered)}


def wait_fresh(client: EntitlementsClient, seconds: float = 30.0) -> None:
    began = time.monotonic()
    while not (client.cache is not None and client.cache.stream_fresh):
        if time.monotonic() - began > seconds:
            raise RuntimeError("the change stream never came up")
        time.sleep(0.02)


def grant(user_id: str, request_id: str) -> ev.GrantEntitlementRequest:
    return ev.GrantEntitlementRequest(
        request_id=request_id,
        user_id=user_id,
        grant=ev.Grant(kind=ev.GRANT_KIND_SUPPORT, feature_id="offline_downloads"),
    )


def hit_latency(client: EntitlementsClient, calls: int, keys: int = 1_000) -> dict[str, Any]:
    """Latency of a near-cache hit in process: `keys` decisions cached, then `calls` hits
    in a loop, each timed with perf_counter_ns (whose own cost, measured on an empty
    timed call, is reported and not subtracted)."""
    pairs = [(f"bench-hit-{i}", FEATURES[i % len(FEATURES)]) for i in range(keys)]
    for user, feature in pairs:
        client.get_entitlement(user, feature)
    rpcs = client.rpcs
    get = client.get_entitlement
    clock = time.perf_counter_ns
    samples: list[float] = []
    empty: list[float] = []
    rng = random.Random(1)
    order = [pairs[rng.randrange(keys)] for _ in range(calls)]
    gc.collect()
    for user, feature in order:
        began = clock()
        get(user, feature)
        samples.append((clock() - began) / 1000)
    for _ in range(min(calls, 100_000)):
        began = clock()
        empty.append((clock() - began) / 1000)
    # Checks per second of one core: untimed hits, over the process's CPU time.
    cpu_began, wall_began = time.process_time(), time.perf_counter()
    for user, feature in order:
        get(user, feature)
    cpu = time.process_time() - cpu_began
    wall = time.perf_counter() - wall_began
    return {
        "microseconds": percentiles(samples),
        "timer_overhead_microseconds": percentiles(empty),
        "rpcs_during_hits": client.rpcs - rpcs,
        "checks_per_cpu_second": round(len(order) / cpu) if cpu > 0 else None,
        "checks_per_wall_second": round(len(order) / wall),
    }


def zipf_trace(
    client: EntitlementsClient,
    writer: EntitlementsClient,
    users: int,
    checks: int,
    exponent: float,
    writes_per_second: float,
) -> dict[str, Any]:
    """A Zipf(`exponent`) trace of (user, feature) checks over `users` users, with writes
    by another client through another server process meanwhile (grants to users drawn
    from the same distribution, at `writes_per_second`): how many checks needed an RPC."""
    rng = random.Random(7)
    weights = list(accumulate(1 / (rank**exponent) for rank in range(1, users + 1)))
    drawn = rng.choices(range(users), cum_weights=weights, k=checks)
    trace = [(f"bench-zipf-{u}", FEATURES[(u + i) % 2]) for i, u in enumerate(drawn)]
    stop = threading.Event()
    writes = 0

    def write() -> None:
        nonlocal writes
        writer_rng = random.Random(11)
        while not stop.wait(1 / writes_per_second):
            user = writer_rng.choices(range(users), cum_weights=weights, k=1)[0]
            writer.grant_entitlement(grant(f"bench-zipf-{user}", f"zipf-{writes}"))
            writes += 1

    thread = threading.Thread(target=write, daemon=True)
    rpcs = client.rpcs
    began = time.perf_counter()
    if writes_per_second > 0:
        thread.start()
    stale = 0
    for user, feature in trace:
        stale += client.get_entitlement(user, feature).stale
    stop.set()
    if writes_per_second > 0:
        thread.join()
    sent = client.rpcs - rpcs
    return {
        "users": users,
        "checks": checks,
        # Each needs one RPC at least (a cold miss): the most a cache can save is the rest.
        "distinct_keys": len(set(trace)),
        "zipf_exponent": exponent,
        "writes_meanwhile": writes,
        "seconds": round(time.perf_counter() - began, 2),
        "rpcs": sent,
        "rpcs_saved": checks - sent,
        "rpcs_saved_fraction": round((checks - sent) / checks, 4),
        "stale_answers": stale,
    }


def staleness(
    client: EntitlementsClient, writer: EntitlementsClient, writes: int
) -> dict[str, Any]:
    """From a write's acknowledgement (another client, another server process) until the
    near-cached client's answer shows it, polling every 2 ms: each user's decision is
    cached first (a hit), then written."""
    seconds: list[float] = []
    for index in range(writes):
        user = f"bench-stale-{index}-{time.time_ns()}"
        client.get_entitlement(user, "offline_downloads")
        assert not client.get_entitlement(user, "offline_downloads").granted
        writer.grant_entitlement(grant(user, f"stale-{user}"))
        acknowledged = time.perf_counter()
        while not client.get_entitlement(user, "offline_downloads").granted:
            if time.perf_counter() - acknowledged > 30:
                follower = client.change_stream
                cache = client.cache
                answer = client.get_entitlement(user, FEATURES[0])
                raise RuntimeError(
                    f"write to {user} not seen in 30 s: cache {cache and cache.stats}, "
                    f"stream fresh {cache and cache.stream_fresh}, follower "
                    f"{follower and vars(follower)}, answer {answer}"
                )
            time.sleep(0.002)
        seconds.append((time.perf_counter() - acknowledged) * 1000)
    return {"milliseconds": percentiles(seconds)}


class BackgroundLoad:
    """h2load (closed loop, `connections` x 1 in flight) sending cache-hit GetEntitlement
    calls to a server while a measurement runs; stopped by the process we started."""

    def __init__(self, target: str, token: str, connections: int, folder: Path) -> None:
        body = folder / "background-request"
        request = es.GetEntitlementRequest(user_id="bench-background", feature_id=FEATURES[0])
        body.write_bytes(grpc_frame(request.SerializeToString()))
        url = f"http://{target}/entitlements.v1.EntitlementService/GetEntitlement"
        command = [find_h2load(), "-c", str(connections), "-m", "1", "-t", "1", "-d", str(body)]
        for header in ("content-type: application/grpc", "te: trailers"):
            command += ["-H", header]
        command += ["-H", f"authorization: Bearer {token}", "-D", "3600s", url]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)


def memory_per_decision(sample: Entitlement, entries: int) -> dict[str, Any]:
    """Bytes per cached decision: `entries` distinct decisions (copies of a real one with
    their own user ids and timestamps) stored into a NearCache, measured by tracemalloc."""
    # Stored only while the stream is up: here it stays up however long tracemalloc takes.
    cache = NearCache(entries + 1, heartbeat_timeout=float("inf"))
    cache.heard()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    fields = {name: getattr(sample, name) for name in sample.__dataclass_fields__}
    for index in range(entries):
        user = f"user-{index:08d}"
        # Each decision its own objects, as decisions converted from responses are.
        times = {
            name: value + timedelta(0)
            for name, value in fields.items()
            if isinstance(value, datetime)
        }
        value = Entitlement(**{**fields, **times, "user_id": user})
        cache.store((("e", user, sample.feature_id)), user, value, float("inf"), "", 0)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert len(cache) == entries
    return {"entries": entries, "bytes_per_decision": round(grown / entries)}


@dataclass
class StreamCost:
    cpu_seconds: float
    rss_kib: int


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_streams_cost(
    target: str,
    token: str,
    streams: int,
    seconds: float,
    cpu_of: Callable[[], float],
    pid: int,
    writer: EntitlementsClient,
    writes_per_second: float,
) -> dict[str, Any]:
    """The server's CPU and memory with no change stream open, then with `streams` open,
    each over `seconds`: idle (heartbeats every second), then while `writer` writes
    `writes_per_second` through another server (every stream gets every change)."""
    written = [0]

    def measure(writing: bool) -> StreamCost:
        cpu = cpu_of()
        began = time.monotonic()
        sent = 0
        while writing and time.monotonic() - began < seconds:
            request_id = f"streams-{written[0]}-{time.time_ns()}"
            writer.grant_entitlement(grant(f"bench-streams-{written[0]}", request_id))
            written[0] += 1
            sent += 1
            time.sleep(max(0.0, began + sent / writes_per_second - time.monotonic()))
        if not writing:
            time.sleep(seconds)
        return StreamCost(cpu_of() - cpu, rss_kib(pid))

    idle = measure(False)
    idle_writing = measure(True)
    channel = grpc.insecure_channel(target)
    stub = es_grpc.EntitlementServiceStub(channel)
    calls = [
        stub.WatchChanges(es.WatchChangesRequest(), metadata=bearer_metadata(token))
        for _ in range(streams)
    ]
    received = [0] * streams

    def drain(index: int) -> None:
        try:
            for _ in calls[index]:
                received[index] += 1
        except grpc.RpcError:
            pass

    threads = [threading.Thread(target=drain, args=(i,), daemon=True) for i in range(streams)]
    for thread in threads:
        thread.start()
    time.sleep(2)  # every stream open and past its first message
    opened = measure(False)
    opened_writing = measure(True)
    for call in calls:
        call.cancel()
    channel.close()
    return {
        "streams": streams,
        "seconds": seconds,
        "server_cpu_percent_idle": round(100 * idle.cpu_seconds / seconds, 2),
        "server_cpu_percent_with_streams": round(100 * opened.cpu_seconds / seconds, 2),
        "server_rss_kib_idle": idle.rss_kib,
        "server_rss_kib_with_streams": opened.rss_kib,
        "server_rss_kib_per_stream": round((opened.rss_kib - idle.rss_kib) / streams, 1),
        "writes_per_second": writes_per_second,
        "server_cpu_percent_writing": round(100 * idle_writing.cpu_seconds / seconds, 2),
        "server_cpu_percent_writing_with_streams": round(
            100 * opened_writing.cpu_seconds / seconds, 2
        ),
        "messages_received": sum(received),
        "streams_that_got_messages": sum(1 for r in received if r),
    }
