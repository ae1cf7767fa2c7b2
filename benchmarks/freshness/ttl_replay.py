"""The cache-TTL hit-rate gain (issue 13, item 2): a synthetic, stated read/write trace
replayed through the real cache (service.usecases.cache.UserStateCache) on a simulated
clock, once per TTL.

The trace (defaults; every figure is a parameter and goes into the report):
- reads: one worker's, evenly spaced at `read_rate` per second for `seconds`; each for a
  user drawn from a Zipf distribution (rank r has weight 1 / r**exponent) over `users`
  users: a few users read often, most rarely;
- writes: a Poisson process at `write_rate` per second, over the whole fleet (the change
  feed brings every write to every worker), each for a user drawn from the same Zipf
  distribution (active users are also the ones who buy); each drops the user's entry as
  the feed does (`cache.drop`);
- the cache: `max_entries` (the service's default, 100,000) LRU entries; a miss loads the
  user's state (a free user's: the entry's content does not change hit rates) and puts it.

The same trace (same random seed) is replayed for every TTL, so the hit rates differ by
the TTL alone. Pure Python, no servers: a few seconds per million reads.
"""

from __future__ import annotations

import bisect
import itertools
import random
from array import array
from dataclasses import asdict, dataclass
from typing import Any

from service.domain.account import AccountState, UserState
from service.usecases.cache import UserStateCache

DEFAULT_TTLS = (30.0, 300.0, 3600.0)


@dataclass(frozen=True)
class TraceSpec:
    users: int = 1_000_000
    zipf_exponent: float = 1.0
    # Reads per second of one worker, and writes per second of the whole fleet.
    read_rate: float = 1000.0
    write_rate: float = 10.0
    seconds: float = 1800.0
    max_entries: int = 100_000
    seed: int = 13

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Trace:
    spec: TraceSpec
    # The user rank (0: the most read) of each read, in order; read i is at i / read_rate.
    reads: array[int]
    # (time in seconds, user rank) of each write, in time order.
    writes: tuple[tuple[float, int], ...]


@dataclass(frozen=True)
class ReplayResult:
    ttl_seconds: float
    reads: int
    hits: int
    misses: int
    writes: int
    # Writes that found the user cached (and dropped the entry).
    dropped: int
    # Entries the LRU bound evicted.
    evictions: int

    @property
    def hit_rate(self) -> float:
        return self.hits / self.reads if self.reads else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hit_rate": round(self.hit_rate, 5)}


def zipf_cumulative_weights(users: int, exponent: float) -> list[float]:
    """The cumulative weights of ranks 0..users-1 (rank r weighs 1 / (r + 1)**exponent)."""
    return list(itertools.accumulate(1.0 / (rank + 1) ** exponent for rank in range(users)))


def generate(spec: TraceSpec) -> Trace:
    """The trace of `spec`: the same spec (and seed) gives the same trace."""
    rng = random.Random(spec.seed)
    cumulative = zipf_cumulative_weights(spec.users, spec.zipf_exponent)
    total = cumulative[-1]
    last = spec.users - 1

    def draw() -> int:
        return min(bisect.bisect_right(cumulative, rng.random() * total), last)

    count = round(spec.read_rate * spec.seconds)
    reads = array("i", (draw() for _ in range(count)))
    writes: list[tuple[float, int]] = []
    if spec.write_rate > 0:
        at = rng.expovariate(spec.write_rate)
        while at < spec.seconds:
            writes.append((at, draw()))
            at += rng.expovariate(spec.write_rate)
    return Trace(spec, reads, tuple(writes))


def user_id(rank: int) -> str:
    return f"user-{rank}"


def replay(trace: Trace, ttl_seconds: float) -> ReplayResult:
    """Replays `trace` through a real UserStateCache with a simulated clock."""
    now = [0.0]
    cache = UserStateCache(trace.spec.max_entries, ttl_seconds, monotonic=lambda: now[0])
    interval = 1.0 / trace.spec.read_rate
    writes = trace.writes
    next_write = 0
    dropped = 0
    get, put, drop = cache.get, cache.put, cache.drop
    for index, rank in enumerate(trace.reads):
        at = index * interval
        while next_write < len(writes) and writes[next_write][0] <= at:
            write_at, written = writes[next_write]
            now[0] = write_at
            # As the feed does: the user's new version is unknown here; drop whatever is held.
            if drop(user_id(written), None):
                dropped += 1
            next_write += 1
        now[0] = at
        uid = user_id(rank)
        if get(uid) is None:
            put(UserState(AccountState.new(uid)))
    stats = cache.stats
    return ReplayResult(
        ttl_seconds=ttl_seconds,
        reads=len(trace.reads),
        hits=stats.hits,
        misses=stats.misses,
        writes=next_write,
        dropped=dropped,
        evictions=stats.evictions,
    )


def measure(spec: TraceSpec, ttls: tuple[float, ...] = DEFAULT_TTLS) -> dict[str, Any]:
    """The trace's hit rate at each TTL (JSON-ready)."""
    trace = generate(spec)
    results = [replay(trace, ttl) for ttl in ttls]
    return {
        "trace": spec.as_dict(),
        "reads": len(trace.reads),
        "writes": len(trace.writes),
        "results": [result.as_dict() for result in results],
    }
