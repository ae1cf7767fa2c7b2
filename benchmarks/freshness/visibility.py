"""Write-to-visible and watch notification latency against a real multi-worker server.

Connections: SO_REUSEPORT gives each connection to one worker, so channels are opened one
at a time (each its own connection: `grpc.use_local_subchannel_pool`) and kept until
every worker holds `readers_per_worker` of them (benchmarks/load/balance.py tells which
worker holds a connection).

One repetition, for a user no earlier repetition touched:
1. a WatchEntitlements stream for the user is opened on a connection to the worker that
   will NOT take the write, and its first (initial) message read;
2. every reader connection reads the user without a consistency token (the user's free
   state is now cached in every worker) and checks the feature is not granted;
3. after a random pause (uniform in 0..`jitter` seconds: without it, each repetition
   would start a fixed time after the feed poll that ended the previous one, and every
   write would land at the same phase of the poll cycle), GrantEntitlement (a fresh
   request id) through a connection to the writing worker (alternating between workers
   from one repetition to the next); its send and its acknowledgement are timed;
4. every reader connection, each in its own thread, reads the user token-less every
   `poll_interval` seconds until the grant shows; the watch's next message is awaited in
   another thread.

Write-to-visible = from the acknowledgement (and from the send) to the moment the LAST
reader connection saw the grant: the moment its read's answer arrived, so the figure
includes up to one poll interval plus one read of the client's own polling. Watch
latency = from the acknowledgement to the message's arrival. A reader may see the write
before the writer's client has read the acknowledgement: such samples are negative.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from benchmarks.data import ADMIN_TOKEN, SERVICE_TOKEN
from benchmarks.freshness.stats import summarize_seconds
from benchmarks.load import balance
from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import entitlement_service_pb2_grpc as es_grpc
from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements.v1 import subscription_event_service_pb2_grpc as ev_grpc

FEATURE = "offline_downloads"
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]
# A repetition whose readers have not all seen the write by then counts as not seen.
SEEN_WITHIN_SECONDS = 10.0
RPC_TIMEOUT_SECONDS = 10.0
# Channels opened to find a connection for every worker before giving up.
MAX_CHANNEL_ATTEMPTS = 60

READ_METADATA = (("authorization", f"Bearer {SERVICE_TOKEN}"),)
WRITE_METADATA = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


class Unbalanced(RuntimeError):
    """Could not open a connection to every worker (or could not tell where they went)."""


@dataclass
class Connection:
    worker_pid: int
    channel: grpc.Channel
    reads: es_grpc.EntitlementServiceStub = field(init=False)
    writes: ev_grpc.SubscriptionEventServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self.reads = es_grpc.EntitlementServiceStub(self.channel)
        self.writes = ev_grpc.SubscriptionEventServiceStub(self.channel)

    def granted(self, user_id: str) -> bool:
        response = self.reads.GetEntitlement(
            es.GetEntitlementRequest(user_id=user_id, feature_id=FEATURE),
            timeout=RPC_TIMEOUT_SECONDS,
            metadata=READ_METADATA,
        )
        return bool(response.entitlement.granted)


@contextlib.contextmanager
def connections(
    target: str, worker_pids: Sequence[int], per_worker: int
) -> Iterator[dict[int, list[Connection]]]:
    """`per_worker` connections to each worker of the server at `target`, by worker pid."""
    port = int(target.rsplit(":", 1)[1])
    by_worker: dict[int, list[Connection]] = {pid: [] for pid in worker_pids}
    opened: list[grpc.Channel] = []
    try:
        for _ in range(MAX_CHANNEL_ATTEMPTS):
            if all(len(held) >= per_worker for held in by_worker.values()):
                break
            before = balance.own_socket_inodes()
            channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
            opened.append(channel)
            grpc.channel_ready_future(channel).result(timeout=20)
            pid = balance.worker_of(balance.own_socket_inodes() - before, port, tuple(worker_pids))
            if pid is None:
                raise Unbalanced("cannot tell which worker holds a connection (/proc)")
            if len(by_worker[pid]) < per_worker:
                by_worker[pid].append(Connection(pid, channel))
            else:
                channel.close()
        else:
            counts = {pid: len(held) for pid, held in by_worker.items()}
            raise Unbalanced(
                f"no connection to every worker after {MAX_CHANNEL_ATTEMPTS}: {counts}"
            )
        yield by_worker
    finally:
        for channel in opened:
            channel.close()


@dataclass
class Repetition:
    user_id: str
    writer_pid: int
    watch_pid: int
    # Seconds from the write's acknowledgement (and its send) until the last reader saw
    # it; None when some reader did not within SEEN_WITHIN_SECONDS.
    visible_after_ack: float | None
    visible_after_send: float | None
    # The same for the readers of the worker that did not take the write.
    other_worker_after_ack: float | None
    # Seconds from the acknowledgement to the watch message; None if none came, or it
    # did not carry the grant.
    watch_after_ack: float | None
    watch_reason: str
    write_seconds: float
    # RPCs that failed (status names) and were tried again; and why the repetition
    # measured nothing, if it did not (the write failed).
    failed_reads: list[str] = field(default_factory=list)
    error: str = ""


def _poll_until_granted(
    connection: Connection, user_id: str, interval: float, failures: list[str]
) -> float | None:
    """When the user's grant showed on the connection (None: not within the bound). A
    read that fails (the emulator can outlast the store budget) is noted and tried again."""
    deadline = time.monotonic() + SEEN_WITHIN_SECONDS
    while True:
        try:
            if connection.granted(user_id):
                return time.monotonic()
        except grpc.RpcError as error:
            failures.append(_status(error))
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def _status(error: grpc.RpcError) -> str:
    return error.code().name if isinstance(error, grpc.Call) else type(error).__name__


def _cache_everywhere(
    pool: concurrent.futures.ThreadPoolExecutor,
    readers: list[Connection],
    user: str,
    failures: list[str],
) -> None:
    """Every reader reads the user token-less (so every worker caches the current state),
    each tried up to 3 times; raises if the feature shows granted already."""

    def read(connection: Connection) -> bool:
        for attempt in range(3):
            try:
                return connection.granted(user)
            except grpc.RpcError as error:
                failures.append(_status(error))
                if attempt == 2:
                    raise
                time.sleep(0.2)
        return False

    if any(pool.map(read, readers)):
        raise RuntimeError(f"{user} already holds {FEATURE} on some worker")


def _next_message(stream: Any) -> tuple[float, es.WatchEntitlementsResponse | None]:
    try:
        message = next(stream)
    except (grpc.RpcError, StopIteration):
        return time.monotonic(), None
    return time.monotonic(), message


def repeat(
    by_worker: dict[int, list[Connection]],
    user_ids: Sequence[str],
    *,
    poll_interval: float,
    jitter: float,
    request_prefix: str,
    budget_seconds: float,
    seed: int = 13,
    log: Any = print,
) -> list[Repetition]:
    """One repetition per user (see the module docstring), until the users or the time
    budget run out."""
    pids = list(by_worker)
    readers = [c for held in by_worker.values() for c in held]
    done: list[Repetition] = []
    ends = time.monotonic() + budget_seconds
    pauses = random.Random(seed)
    with concurrent.futures.ThreadPoolExecutor(len(readers) + 1) as pool:
        for index, user in enumerate(user_ids):
            if time.monotonic() > ends:
                log(f"  time budget spent after {index} repetitions")
                break
            writer_pid = pids[index % len(pids)]
            watch_pid = pids[(index + 1) % len(pids)]
            done.append(
                _one(pool, by_worker, readers, user, writer_pid, watch_pid, poll_interval,
                     pauses.uniform(0.0, jitter), f"{request_prefix}-{index}")
            )  # fmt: skip
            if (index + 1) % 25 == 0:
                log(f"  {index + 1} repetitions")
    return done


def _one(
    pool: concurrent.futures.ThreadPoolExecutor,
    by_worker: dict[int, list[Connection]],
    readers: list[Connection],
    user: str,
    writer_pid: int,
    watch_pid: int,
    poll_interval: float,
    pause: float,
    request_id: str,
) -> Repetition:
    watching = by_worker[watch_pid][0]
    stream = watching.reads.WatchEntitlements(
        es.WatchEntitlementsRequest(user_id=user, feature_ids=[FEATURE]),
        timeout=SEEN_WITHIN_SECONDS + 30,
        metadata=READ_METADATA,
    )
    failures: list[str] = []
    try:
        try:
            first = next(stream)
        except grpc.RpcError as error:
            return _failed(user, writer_pid, watch_pid, f"watch: {_status(error)}", failures)
        if first.entitlements[0].granted:
            raise RuntimeError(f"{user} already holds {FEATURE}: not a fresh user")
        _cache_everywhere(pool, readers, user, failures)
        time.sleep(pause)
        watched = pool.submit(_next_message, stream)
        request = ev.GrantEntitlementRequest(
            request_id=request_id,
            user_id=user,
            grant=ev.Grant(kind=ev.GRANT_KIND_SUPPORT, feature_id=FEATURE),
        )
        sent = time.monotonic()
        try:
            by_worker[writer_pid][0].writes.GrantEntitlement(
                request, timeout=RPC_TIMEOUT_SECONDS, metadata=WRITE_METADATA
            )
        except grpc.RpcError as error:
            return _failed(user, writer_pid, watch_pid, f"write: {_status(error)}", failures)
        acked = time.monotonic()
        polls = [
            pool.submit(_poll_until_granted, c, user, poll_interval, failures) for c in readers
        ]
        seen = [p.result() for p in polls]
        received, message = watched.result(timeout=SEEN_WITHIN_SECONDS + 30)
    finally:
        stream.cancel()
    last = None if None in seen else max(s for s in seen if s is not None)
    others = [s for c, s in zip(readers, seen, strict=True) if c.worker_pid != writer_pid]
    other_last = None if None in others or not others else max(s for s in others if s is not None)
    watch_ok = (
        message is not None
        and message.reason == es.WATCH_REASON_WRITE
        and message.entitlements[0].granted
    )
    return Repetition(
        user_id=user,
        writer_pid=writer_pid,
        watch_pid=watch_pid,
        visible_after_ack=None if last is None else last - acked,
        visible_after_send=None if last is None else last - sent,
        other_worker_after_ack=None if other_last is None else other_last - acked,
        watch_after_ack=received - acked if watch_ok else None,
        watch_reason="-" if message is None else es.WatchReason.Name(message.reason),
        write_seconds=acked - sent,
        failed_reads=failures,
    )


def _failed(
    user: str, writer_pid: int, watch_pid: int, error: str, failures: list[str]
) -> Repetition:
    return Repetition(user, writer_pid, watch_pid, None, None, None, None, "-", 0.0,
                      failures, error)  # fmt: skip


def summary(repetitions: list[Repetition]) -> dict[str, Any]:
    """The latency summaries of a run's repetitions (JSON-ready)."""

    measured = [r for r in repetitions if not r.error]

    def values(name: str) -> list[float]:
        return [v for r in measured if (v := getattr(r, name)) is not None]

    return {
        "repetitions": len(measured),
        "failed_writes": [r.error for r in repetitions if r.error],
        "failed_reads_retried": sum(len(r.failed_reads) for r in repetitions),
        "write_to_visible_after_ack": summarize_seconds(values("visible_after_ack")),
        "write_to_visible_after_send": summarize_seconds(values("visible_after_send")),
        "other_worker_after_ack": summarize_seconds(values("other_worker_after_ack")),
        "not_seen_within_s": sum(1 for r in measured if r.visible_after_ack is None),
        "seen_within_s": SEEN_WITHIN_SECONDS,
        "watch_after_ack": summarize_seconds(values("watch_after_ack")),
        "watch_missed": sum(1 for r in measured if r.watch_after_ack is None),
        "write_rpc": summarize_seconds(values("write_seconds")),
    }
