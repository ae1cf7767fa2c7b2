"""A load generator process: blocking gRPC calls from a pool of threads.

The coordinator starts a few of these (spawned, so no gRPC state is inherited) and sends
each a Phase; the process opens its channels (evened over the server's workers, see
balance.py), warms the server's caches if asked, answers "ready", waits for the common
start time, drives the load and answers a GeneratorResult.

- Closed loop: `concurrency` threads each send the next RPC as soon as their previous one
  ends; latency counts from the send.
- Open loop: RPC k is due at a fixed intended time (the processes interleaved, the rate
  split between them); a pool of threads takes the next due RPC, sleeps until its time and
  sends it. Latency counts from the *intended* time, so when the server (or the
  generator) falls behind, the delay shows in the latency instead of being hidden (no
  coordinated omission, as in wrk2). time.sleep is precise to ~0.1 ms here; how late sends
  left is reported as the send lag. Past the window's end plus a grace, unsent RPCs are
  counted as NOT_SENT errors instead of being sent late without bound.

Why threads and blocking calls: measured here, a grpc.aio open loop costs ~290 µs of
client CPU per RPC (a quarter of it its poller thread waking the event loop) and its timers
are late by 0.1-0.5 ms; blocking calls from threads cost ~250 µs and are on time.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from array import array
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

import grpc

from benchmarks.data import ADMIN_TOKEN, SERVICE_TOKEN, bench_user_ids, block_accounts
from benchmarks.load import balance
from benchmarks.load.plan import (
    BATCH,
    CLOSED,
    GET,
    MIX,
    NOT_SENT,
    OFFERS,
    OPEN_LOOP_THREADS,
    GeneratorResult,
    Phase,
    Workload,
)
from entitlements.v1 import common_pb2, entitlement_service_pb2, offer_service_pb2
from entitlements.v1 import subscription_event_service_pb2 as events_pb2
from service.catalog import load_catalog

SERVICE_METADATA = (("authorization", f"Bearer {SERVICE_TOKEN}"),)
ADMIN_METADATA = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]
PLATFORMS = (common_pb2.PLATFORM_WEB, common_pb2.PLATFORM_IOS, common_pb2.PLATFORM_ANDROID)
POOL_SIZE = 20_000
GRANTED_FEATURE = "high_fidelity_audio"
# Open loop: RPCs due this long after the window closed are not sent any more.
SEND_GRACE_NS = 1_000_000_000
WARM_THREADS = 16

Method = Callable[..., Any]


def _method(channel: grpc.Channel, path: str, request_type: Any, response_type: Any) -> Method:
    return channel.unary_unary(
        path,
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_type.FromString,
    )


class Traffic:
    """The requests of one workload for one generator process; `call(k)` makes the k-th
    RPC on channel k mod channels and returns its method name and status code name."""

    def __init__(
        self,
        workload: Workload,
        channels: list[grpc.Channel],
        index: int,
        processes: int,
        deadline: float,
    ) -> None:
        self.workload = workload
        self._deadline = deadline
        rng = random.Random(1000 + index)
        self.users = bench_user_ids(workload.users)[index::processes]
        features = list(load_catalog().features)
        markets = {
            a.user_id.split("-", 1)[1]: a.home_market or "US"
            for a in block_accounts(0, datetime.now(UTC))
        }
        e = entitlement_service_pb2

        def stubs(service: str, name: str, request: Any, response: Any) -> list[Method]:
            path = f"/entitlements.v1.{service}/{name}"
            return [_method(c, path, request, response) for c in channels]

        entitlements = "EntitlementService"
        self._get = stubs(
            entitlements, "GetEntitlement", e.GetEntitlementRequest, e.GetEntitlementResponse
        )
        self._list = stubs(
            entitlements, "ListEntitlements", e.ListEntitlementsRequest, e.ListEntitlementsResponse
        )
        self._batch = stubs(
            entitlements,
            "BatchGetEntitlements",
            e.BatchGetEntitlementsRequest,
            e.BatchGetEntitlementsResponse,
        )
        self._offers = stubs(
            "OfferService",
            "GetOffers",
            offer_service_pb2.GetOffersRequest,
            offer_service_pb2.GetOffersResponse,
        )
        self._grant = stubs(
            "SubscriptionEventService",
            "GrantEntitlement",
            events_pb2.GrantEntitlementRequest,
            events_pb2.GrantEntitlementResponse,
        )
        self._channels = len(channels)
        kind = workload.kind
        repeats = max(1, min(POOL_SIZE // max(1, len(self.users)), len(features)))
        pairs = [(u, rng.choice(features)) for u in self.users for _ in range(repeats)]
        rng.shuffle(pairs)
        self._pool: list[Any]
        if kind in (GET, MIX):
            self._pool = [e.GetEntitlementRequest(user_id=u, feature_id=f) for u, f in pairs]
        elif kind == OFFERS:
            self._pool = [
                offer_service_pb2.GetOffersRequest(
                    user_id=u, market=markets[u.split("-", 1)[1]], platform=rng.choice(PLATFORMS)
                )
                for u, _ in pairs
            ]
        elif kind == BATCH:
            per_user = 2
            self._pool = []
            for _ in range(64):
                users = rng.sample(
                    self.users, min(len(self.users), workload.batch_size // per_user)
                )
                queries = [
                    e.EntitlementQuery(user_id=u, feature_id=f)
                    for u in users
                    for f in rng.sample(features, per_user)
                ][: workload.batch_size]
                self._pool.append(e.BatchGetEntitlementsRequest(queries=queries))
        else:
            raise ValueError(f"unknown workload {kind!r}")
        self._rng = rng
        # MIX: the newest consistency token of each user this process wrote.
        self.tokens: dict[str, str] = {}
        self._write_every = (
            round(1 / workload.write_fraction) if kind == MIX and workload.write_fraction else 0
        )
        self.method = {
            GET: "GetEntitlement",
            MIX: "GetEntitlement",
            OFFERS: "GetOffers",
            BATCH: "BatchGetEntitlements",
        }[kind]

    def call(self, k: int) -> tuple[str, str]:
        """Makes the k-th RPC; (method, status code name)."""
        channel = k % self._channels
        timeout = self._deadline
        kind = self.workload.kind
        try:
            if self._write_every and k % self._write_every == self._write_every - 1:
                user = self._rng.choice(self.users)
                grant = events_pb2.GrantEntitlementRequest(
                    request_id=uuid.uuid4().hex,
                    user_id=user,
                    grant=events_pb2.Grant(
                        kind=events_pb2.GRANT_KIND_PROMOTIONAL, feature_id=GRANTED_FEATURE
                    ),
                )
                method = "GrantEntitlement"
                answer = self._grant[channel](grant, metadata=ADMIN_METADATA, timeout=timeout)
                self.tokens[user] = answer.consistency_token
                return method, "OK"
            request = self._pool[k % len(self._pool)]
            method = self.method
            if kind == MIX:
                token = self.tokens.get(request.user_id)
                if token:
                    request = entitlement_service_pb2.GetEntitlementRequest(
                        user_id=request.user_id,
                        feature_id=request.feature_id,
                        consistency=common_pb2.ReadConsistency(consistency_token=token),
                    )
                self._get[channel](request, metadata=SERVICE_METADATA, timeout=timeout)
            elif kind == GET:
                self._get[channel](request, metadata=SERVICE_METADATA, timeout=timeout)
            elif kind == OFFERS:
                self._offers[channel](request, metadata=SERVICE_METADATA, timeout=timeout)
            else:
                self._batch[channel](request, metadata=SERVICE_METADATA, timeout=timeout)
            return method, "OK"
        except grpc.RpcError as error:
            return method, error.code().name

    def warm(self, channels: list[int]) -> int:
        """ListEntitlements for every user of this process through each of `channels`:
        every worker then holds these users' state and memoised decisions. Returns the
        number of calls that failed."""

        def one(item: tuple[int, str]) -> bool:
            c, u = item
            request = entitlement_service_pb2.ListEntitlementsRequest(user_id=u)
            try:
                self._list[c](request, metadata=SERVICE_METADATA, timeout=10)
                return True
            except grpc.RpcError:
                return False

        with ThreadPoolExecutor(WARM_THREADS) as pool:
            outcomes = list(pool.map(one, [(c, u) for c in channels for u in self.users]))
        return outcomes.count(False)


class Recorder:
    """Samples of the measured window; safe to call from several threads."""

    def __init__(self, window_start: int, window_end: int) -> None:
        self.start = window_start
        self.end = window_end
        self.samples: dict[str, array[int]] = {}
        self.errors: dict[str, int] = {}
        self.lag: array[int] = array("q")
        self._lock = threading.Lock()

    def record(self, method: str, code: str, since: int, latency: int) -> None:
        if not self.start <= since < self.end:
            return
        if code == "OK":
            bucket = self.samples.get(method)
            if bucket is None:
                with self._lock:
                    bucket = self.samples.setdefault(method, array("q"))
            bucket.append(latency)  # one C call: atomic under the GIL
        else:
            key = f"{method}:{code}"
            with self._lock:
                self.errors[key] = self.errors.get(key, 0) + 1


def _closed_loop(traffic: Traffic, phase: Phase, start: int, rec: Recorder) -> None:
    counter = itertools.count()

    def runner() -> None:
        _sleep_until(start)
        while True:
            sent = time.monotonic_ns()
            if sent >= rec.end:
                return
            method, code = traffic.call(next(counter))
            rec.record(method, code, sent, time.monotonic_ns() - sent)

    _run_threads(runner, phase.concurrency)


def _open_loop(
    traffic: Traffic, phase: Phase, start: int, rec: Recorder, index: int, processes: int
) -> None:
    interval = 1e9 * processes / phase.rate
    first = start + index * 1e9 / phase.rate
    counter = itertools.count()
    stop_sending = rec.end + SEND_GRACE_NS

    def runner() -> None:
        while True:
            k = next(counter)
            intended = int(first + k * interval)
            if intended >= rec.end:
                return
            now = _sleep_until(intended)
            if now >= stop_sending:
                rec.record(traffic.method, NOT_SENT, intended, 0)
                continue
            if rec.start <= intended < rec.end:
                rec.lag.append(now - intended)
            method, code = traffic.call(k)
            rec.record(method, code, intended, time.monotonic_ns() - intended)

    _run_threads(runner, OPEN_LOOP_THREADS)


def _sleep_until(when: int) -> int:
    now = time.monotonic_ns()
    if when > now:
        time.sleep((when - now) / 1e9)
        now = time.monotonic_ns()
    return now


def _run_threads(target: Callable[[], None], count: int) -> None:
    threads = [threading.Thread(target=target, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _open_channels(phase: Phase) -> tuple[list[grpc.Channel], dict[int, list[int]] | None]:
    """`channels_per_worker` channels per server worker, each its own connection; the
    second value maps worker pid to channel indexes (None: placement unknown)."""
    port = int(phase.target.rsplit(":", 1)[1])
    pids = phase.server_pids
    wanted = phase.channels_per_worker * max(1, len(pids))
    kept: list[grpc.Channel] = []
    by_worker: dict[int, list[int]] = {pid: [] for pid in pids}
    balanced = len(pids) > 1
    attempts = 0
    while len(kept) < wanted:
        attempts += 1
        before = balance.own_socket_inodes()
        channel = grpc.insecure_channel(phase.target, options=CHANNEL_OPTIONS)
        grpc.channel_ready_future(channel).result(timeout=20)
        if not balanced:
            kept.append(channel)
            continue
        pid = balance.worker_of(balance.own_socket_inodes() - before, port, pids)
        if pid is None or attempts > wanted * 20:
            balanced = False  # cannot tell (or no luck): keep what comes
            kept.append(channel)
        elif len(by_worker[pid]) < phase.channels_per_worker:
            by_worker[pid].append(len(kept))
            kept.append(channel)
        else:
            channel.close()
    return kept, (by_worker if balanced else None)


def _run_phase(conn: Connection, phase: Phase, index: int, processes: int) -> None:
    channels, by_worker = _open_channels(phase)
    try:
        traffic = Traffic(phase.workload, channels, index, processes, phase.deadline_seconds)
        note = ""
        if phase.workload.warm_cache:
            # One channel per worker warms that worker; without placement, every channel.
            warm = [ix[0] for ix in by_worker.values() if ix] if by_worker else []
            failures = traffic.warm(warm or list(range(len(channels))))
            if failures:
                note = f"{failures} warm-up calls failed"
        conn.send(("ready", None))
        start_wall = conn.recv()
        start = time.monotonic_ns() + int((start_wall - time.time()) * 1e9)
        window_start = start + int(phase.warmup_seconds * 1e9)
        window_end = window_start + int(phase.seconds * 1e9)
        rec = Recorder(window_start, window_end)
        cpu: list[float] = []

        def sample_cpu() -> None:
            for at in (window_start, window_end):
                _sleep_until(at)
                cpu.append(time.process_time())

        sampler = threading.Thread(target=sample_cpu, daemon=True)
        sampler.start()
        if phase.shape == CLOSED:
            _closed_loop(traffic, phase, start, rec)
        else:
            _open_loop(traffic, phase, start, rec, index, processes)
        sampler.join()
        result = GeneratorResult(
            samples={m: s.tobytes() for m, s in rec.samples.items()},
            errors=rec.errors,
            send_lag=rec.lag.tobytes(),
            cpu_seconds=cpu[1] - cpu[0],
            window_seconds=phase.seconds,
            connections={pid: len(ix) for pid, ix in by_worker.items()} if by_worker else None,
            note=note,
        )
    finally:
        for channel in channels:
            channel.close()
    conn.send(("result", result))


def generator_main(conn: Connection, index: int, processes: int) -> None:
    """Entry point of a spawned generator process: runs phases until told to stop."""
    while True:
        message = conn.recv()
        if message is None:
            return
        try:
            _run_phase(conn, message, index, processes)
        except Exception as error:  # reported to the coordinator, which fails the run
            conn.send(("error", f"{type(error).__name__}: {error}"))
