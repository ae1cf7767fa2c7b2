"""What the coordinator asks a generator process to do, and what it answers (plain
picklable data; no gRPC here)."""

from __future__ import annotations

from dataclasses import dataclass, field

CLOSED = "closed"
OPEN = "open"

# Workload kinds.
GET = "get"  # GetEntitlement
OFFERS = "offers"  # GetOffers
BATCH = "batch"  # BatchGetEntitlements of `batch_size` queries
MIX = "mix"  # GetEntitlement with consistency tokens, `write_fraction` GrantEntitlement

# Open loop: sending threads per generator process, so at most this many RPCs in flight
# per process; when all are busy, sends leave late and the lateness counts as latency.
OPEN_LOOP_THREADS = 16
# Open loop: an RPC still unsent well after the window (the generator or server fell far
# behind) is not sent; it counts as an error with this code.
NOT_SENT = "NOT_SENT"


@dataclass(frozen=True, slots=True)
class Workload:
    kind: str
    # Requests draw on the first `users` benchmark users (benchmarks.data.bench_user_ids),
    # split between generator processes.
    users: int
    # Before measuring, every user's decisions are computed once through every worker
    # (ListEntitlements), so that the cache-hit scenarios measure hits only.
    warm_cache: bool = False
    batch_size: int = 100
    write_fraction: float = 0.0


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    target: str  # host:port
    server_pids: tuple[int, ...]  # worker processes serving the port
    workload: Workload
    shape: str  # CLOSED or OPEN
    concurrency: int = 0  # CLOSED: RPCs in flight per generator process
    rate: float = 0.0  # OPEN: offered RPCs per second, all generator processes together
    warmup_seconds: float = 1.0
    seconds: float = 5.0
    channels_per_worker: int = 2  # per generator process
    deadline_seconds: float = 5.0


@dataclass(slots=True)
class GeneratorResult:
    # Latency samples in ns per RPC method (array('q') bytes): from the send for the
    # closed loop, from the *intended* send time for the open loop.
    samples: dict[str, bytes] = field(default_factory=dict)
    # Calls that did not end OK, by "Method:CODE".
    errors: dict[str, int] = field(default_factory=dict)
    # Open loop: how late sends left after their intended time (ns samples, array bytes).
    send_lag: bytes = b""
    cpu_seconds: float = 0.0  # this process's CPU time during the measured window
    window_seconds: float = 0.0
    # Connections per server worker pid (None: where they landed could not be told).
    connections: dict[int, int] | None = None
    note: str = ""
