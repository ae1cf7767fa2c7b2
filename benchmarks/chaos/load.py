"""The steady load a drill runs under, and what it saw.

- readers: threads of GetEntitlement on a set of users (cache hits once warm), each on a
  channel of its own (so the kernel may give them to different workers);
- a writer: GrantEntitlement to a new user each time, with a unique request id; every
  acknowledged write is kept with its consistency token, to be read back after recovery;
- a health prober: grpc.health.v1 Check on a new connection each time (so on whichever
  worker takes it);
- the forged-token storm, which a drill runs beside it (`storm`).

Every RPC has a deadline. Each answer is recorded as an Observation (what, when sent,
when answered, status code name). Threads pace themselves (a target rate each) and stop
when told; every loop is bounded by that stop event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.data import ADMIN_TOKEN, SERVICE_TOKEN
from entitlements.v1 import common_pb2
from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import entitlement_service_pb2_grpc as es_grpc
from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements.v1 import subscription_event_service_pb2_grpc as ev_grpc
from service.grpc_api.auth import with_bearer_token

READ = "read"
WRITE = "write"
PROBE = "health"
STORM = "storm"
OK = "OK"
SERVING_NAME = "SERVING"
FEATURE = "offline_downloads"
READ_DEADLINE_S = 2.0
# Beyond the server's write timeout (2 s): the server's budget ends a write, not ours.
WRITE_DEADLINE_S = 3.0
PROBE_DEADLINE_S = 1.0
# A client that reconnects promptly after a worker died (gRPC's default first backoff is
# 1 s; a load balancer's health check would do the same).
CHANNEL_OPTIONS: list[tuple[str, object]] = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


@dataclass(frozen=True, slots=True)
class Observation:
    kind: str
    started: float  # time.monotonic()
    ended: float
    code: str  # a grpc.StatusCode name, or the health status name for PROBE

    @property
    def ok(self) -> bool:
        return self.code == (SERVING_NAME if self.kind == PROBE else OK)


@dataclass(frozen=True, slots=True)
class AckedWrite:
    user_id: str
    request_id: str
    token: str
    acked_at: float


@dataclass(frozen=True)
class LoadShape:
    readers: int = 2
    read_rate: float = 100.0  # per reader thread, per second
    writers: int = 1
    write_rate: float = 25.0  # per writer thread, per second
    probe_rate: float = 10.0
    read_users: int = 40


def new_channel(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)


def code_name(error: grpc.RpcError) -> str:
    code = error.code() if isinstance(error, grpc.Call) else None
    return code.name if code is not None else "UNKNOWN"


def read_request(user_id: str, token: str = "") -> es.GetEntitlementRequest:
    return es.GetEntitlementRequest(
        user_id=user_id,
        feature_id=FEATURE,
        consistency=common_pb2.ReadConsistency(consistency_token=token),
    )


def grant_request(user_id: str, request_id: str) -> ev.GrantEntitlementRequest:
    return ev.GrantEntitlementRequest(
        request_id=request_id,
        user_id=user_id,
        grant=ev.Grant(kind=ev.GRANT_KIND_SUPPORT, feature_id=FEATURE),
    )


def health_status(channel: grpc.Channel, timeout: float = PROBE_DEADLINE_S) -> str:
    """The health status name of the server ("" service), or the RPC's status code name."""
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        response = stub.Check(request, timeout=timeout)  # type: ignore[attr-defined]
    except grpc.RpcError as error:
        return code_name(error)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


@dataclass
class Load:
    """The steady load against one server, from start() until stop()."""

    target: str
    label: str  # makes user and request ids unique to this drill and run
    shape: LoadShape = field(default_factory=LoadShape)
    observations: list[Observation] = field(default_factory=list)
    acked: list[AckedWrite] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _channels: list[grpc.Channel] = field(default_factory=list)
    _writes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def read_users(self) -> list[str]:
        return [f"{self.label}-reader-{i}" for i in range(self.shape.read_users)]

    def start(self) -> None:
        for index in range(self.shape.readers):
            self._spawn(f"reader-{index}", self._reader, index)
        for index in range(self.shape.writers):
            self._spawn(f"writer-{index}", self._writer, index)
        self._spawn("prober", self._prober, 0)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=WRITE_DEADLINE_S + 5)
        for channel in self._channels:
            channel.close()

    def record(self, kind: str, started: float, code: str) -> None:
        self.observations.append(Observation(kind, started, time.monotonic(), code))

    def since(self, moment: float) -> list[Observation]:
        return [o for o in list(self.observations) if o.started >= moment]

    def _spawn(self, name: str, body: Callable[[int], None], index: int) -> None:
        thread = threading.Thread(target=body, args=(index,), name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _channel(self) -> grpc.Channel:
        channel = new_channel(self.target)
        with self._lock:
            self._channels.append(channel)
        return channel

    def _paced(self, rate: float, step: Callable[[int], None]) -> None:
        """Calls step(n) about `rate` times a second until stopped (closed loop: a slow
        answer delays the next call, never queues calls)."""
        interval = 1.0 / rate
        next_at = time.monotonic()
        count = 0
        while not self._stop.is_set():
            step(count)
            count += 1
            next_at = max(next_at + interval, time.monotonic() - interval)
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _reader(self, index: int) -> None:
        stub = es_grpc.EntitlementServiceStub(with_bearer_token(self._channel(), SERVICE_TOKEN))
        users = self.read_users

        def step(count: int) -> None:
            user_id = users[(count * self.shape.readers + index) % len(users)]
            started = time.monotonic()
            try:
                stub.GetEntitlement(read_request(user_id), timeout=READ_DEADLINE_S)
            except grpc.RpcError as error:
                self.record(READ, started, code_name(error))
                return
            self.record(READ, started, OK)

        self._paced(self.shape.read_rate, step)

    def _writer(self, index: int) -> None:
        stub = ev_grpc.SubscriptionEventServiceStub(with_bearer_token(self._channel(), ADMIN_TOKEN))

        def step(count: int) -> None:
            user_id = f"{self.label}-w{index}-{count}"
            request_id = f"{self.label}-grant-{index}-{count}"
            started = time.monotonic()
            try:
                response = stub.GrantEntitlement(
                    grant_request(user_id, request_id), timeout=WRITE_DEADLINE_S
                )
            except grpc.RpcError as error:
                self.record(WRITE, started, code_name(error))
                return
            self.record(WRITE, started, OK)
            self.acked.append(
                AckedWrite(user_id, request_id, response.consistency_token, time.monotonic())
            )

        self._paced(self.shape.write_rate, step)

    def _prober(self, _index: int) -> None:
        def step(_count: int) -> None:
            channel = new_channel(self.target)  # a new connection: any worker may take it
            started = time.monotonic()
            try:
                self.record(PROBE, started, health_status(channel))
            finally:
                channel.close()

        self._paced(self.shape.probe_rate, step)


def storm(
    load: Load,
    user_ids: Sequence[str],
    token_of: Callable[[str], str],
    threads: int,
    stop: threading.Event,
) -> None:
    """`threads` threads of back-to-back GetEntitlement with the token `token_of(user)` on
    `user_ids` until `stop` is set (or the load stops), recorded as STORM."""
    channel = new_channel(load.target)
    stub = es_grpc.EntitlementServiceStub(with_bearer_token(channel, SERVICE_TOKEN))
    requests = [read_request(u, token_of(u)) for u in user_ids]

    def one(index: int) -> None:
        count = index
        while not (stop.is_set() or load.stopped):
            started = time.monotonic()
            try:
                stub.GetEntitlement(requests[count % len(requests)], timeout=READ_DEADLINE_S)
            except grpc.RpcError as error:
                load.record(STORM, started, code_name(error))
            else:
                load.record(STORM, started, OK)
            count += threads

    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="storm") as pool:
            list(pool.map(one, range(threads)))
    finally:
        channel.close()


@dataclass(frozen=True)
class Verification:
    checked: int
    lost: list[str]  # request ids of acknowledged writes not readable with their token
    errors: dict[str, int]  # final status of reads that never answered OK


def verify(target: str, writes: Sequence[AckedWrite], attempts: int = 5) -> Verification:
    """Reads every acknowledged write back with its consistency token: it must be there
    (the user's grant gives the feature). A read that keeps failing counts as lost."""
    channel = new_channel(target)
    stub = es_grpc.EntitlementServiceStub(with_bearer_token(channel, SERVICE_TOKEN))
    errors: dict[str, int] = {}
    lock = threading.Lock()

    def present(write: AckedWrite) -> bool:
        last = ""
        for attempt in range(attempts):
            try:
                answer = stub.GetEntitlement(
                    read_request(write.user_id, write.token), timeout=READ_DEADLINE_S
                )
            except grpc.RpcError as error:
                last = code_name(error)
                time.sleep(0.2 * (attempt + 1))
                continue
            return bool(answer.entitlement.granted)
        with lock:
            errors[last] = errors.get(last, 0) + 1
        return False

    try:
        with ThreadPoolExecutor(8, thread_name_prefix="verify") as pool:
            found = list(pool.map(present, writes))
    finally:
        channel.close()
    lost = [w.request_id for w, ok in zip(writes, found, strict=True) if not ok]
    return Verification(len(writes), lost, errors)
