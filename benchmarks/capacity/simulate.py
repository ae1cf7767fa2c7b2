"""The capacity simulator: the cache hit rates the model needs, measured by replaying a
stated synthetic fleet trace through the real cache, and the feed load counted.

- Users: checks for daily active users drawn from a Zipf distribution (rank k weighs
  1/k**s), sampled by the inverse of its continuous approximation (a table over hundreds
  of millions of ranks would not fit): heavy listeners check often, most users rarely.
- Pods: `pods` x `workers_per_pod` workers, each a real `UserStateCache` (the service's
  class, its default 100,000 entries and 300 s TTL) on a simulated clock. The load
  balancer spreads calls at random, so every worker sees the whole user population at
  the per-worker rate (the rate at which a worker runs at the fleet's target
  utilisation); with user affinity (a ring hash on the user id) a worker sees 1/W of
  the users at W times their per-worker rate: simulated as Zipf over users / W.
- Writes: Poisson at the fleet's peak write rate, uniform over paying users (renewals
  follow the calendar, not popularity), published to a feed; each pod has ONE feed reader
  that polls every `feed_poll_seconds` and drops the written users from each of its
  workers' caches (as service.grpc_api.feed_reader does); polls are counted.
- The diurnal curve: a fleet sized for the peak runs its workers at a lower rate off
  peak (rate(h) = mean x (1 + (peak/mean - 1) cos(2 pi (h - 20)/24)), peak at 20:00), so the
  hit rate is measured at the peak, the mean and the trough.
- Near caches: a caller process serves whole sessions (a playback session's checks go
  through one caller): sessions start at random, each for a Zipf user, with
  `checks_per_session` checks of `features_per_session` features spread over
  `session_seconds`; the caller keeps an LRU of decisions keyed by (user, feature),
  dropped by the change stream. Its hit rate is the share of checks without an RPC.

Fixed seeds: the same command prints the same tables.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import asdict, dataclass
from typing import Any

from cachetools import LRUCache

from service.domain.account import AccountState, UserState
from service.usecases.cache import UserStateCache

EULER_GAMMA = 0.5772156649


class ZipfSampler:
    """Ranks 1..n with weight 1/k**s, by the inverse of the continuous approximation of
    the cumulative weight (within a few % of the discrete distribution's shares)."""

    def __init__(self, n: int, exponent: float, rng: random.Random) -> None:
        self._n, self._s, self._rng = n, exponent, rng
        if abs(exponent - 1.0) < 1e-9:
            self._total = math.log(n) + EULER_GAMMA
        else:
            self._total = (n ** (1 - exponent) - 1) / (1 - exponent) + 1

    def __call__(self) -> int:
        u = self._rng.random() * self._total
        if abs(self._s - 1.0) < 1e-9:
            rank = math.exp(u - EULER_GAMMA)
        else:
            rank = max(0.0, (u - 1) * (1 - self._s) + 1) ** (1 / (1 - self._s))
        return min(self._n, max(1, int(rank)))


@dataclass(frozen=True)
class ServerTrace:
    users: int  # daily active users the checks are for
    zipf_exponent: float
    reads_per_worker_per_second: float
    writes_per_second: float  # the whole fleet's
    paying: int
    pods: int = 2
    workers_per_pod: int = 2
    cache_entries: int = 100_000
    ttl_seconds: float = 300.0
    feed_poll_seconds: float = 0.1
    seconds: float = 600.0  # simulated; hit rates counted after the warm-up
    warmup_seconds: float = 300.0
    seed: int = 23


@dataclass(frozen=True)
class ServerResult:
    hit_rate: float
    reads: int
    writes: int
    dropped: int
    evictions: int
    feed_polls: int
    feed_polls_per_pod_per_second: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def simulate_servers(trace: ServerTrace) -> ServerResult:
    """Replays `trace` through pods x workers real caches, tick by tick (one tick is a
    feed poll interval): each pod's one feed reader drops the tick's writes from its
    workers' caches, then each worker serves the tick's reads."""
    rng = random.Random(trace.seed)
    draw = ZipfSampler(trace.users, trace.zipf_exponent, rng)
    now = [0.0]
    pods = [
        [
            UserStateCache(trace.cache_entries, trace.ttl_seconds, monotonic=lambda: now[0])
            for _ in range(trace.workers_per_pod)
        ]
        for _ in range(trace.pods)
    ]
    tick = trace.feed_poll_seconds
    reads_per_tick = trace.reads_per_worker_per_second * tick
    carry = 0.0
    hits = reads = dropped = polls = writes = 0
    for step in range(round(trace.seconds / tick)):
        at = step * tick
        now[0] = at
        # The tick's writes (Poisson), read by each pod's feed reader in one poll.
        written = [
            f"u{rng.randint(1, trace.paying)}"
            for _ in range(_poisson(rng, trace.writes_per_second * tick))
        ]
        writes += len(written)
        for workers in pods:
            polls += 1
            for user in written:
                for cache in workers:
                    dropped += cache.drop(user, None)
        carry += reads_per_tick
        count = int(carry)
        carry -= count
        counted = at >= trace.warmup_seconds
        for workers in pods:
            for cache in workers:
                get, put = cache.get, cache.put
                for _ in range(count):
                    user = f"u{draw()}"
                    if get(user) is None:
                        put(UserState(AccountState.new(user)))
                    elif counted:
                        hits += 1
                if counted:
                    reads += count
    measured = trace.seconds
    return ServerResult(
        hit_rate=hits / reads if reads else 0.0,
        reads=reads,
        writes=writes,
        dropped=dropped,
        evictions=sum(cache.stats.evictions for workers in pods for cache in workers),
        feed_polls=polls,
        feed_polls_per_pod_per_second=polls / trace.pods / measured,
    )


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method for small means, normal beyond)."""
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, product, count = math.exp(-mean), rng.random(), 0
    while product > limit:
        product *= rng.random()
        count += 1
    return count


def diurnal(hour: float, peak_to_mean: float) -> float:
    """The load at `hour` over the mean load (peak at 20:00, trough at 08:00)."""
    return 1 + (peak_to_mean - 1) * math.cos(2 * math.pi * (hour - 20) / 24)


@dataclass(frozen=True)
class CallerTrace:
    users: int
    zipf_exponent: float
    checks_per_second: float  # one caller process's
    checks_per_session: float = 12.0
    features_per_session: int = 3
    session_seconds: float = 1200.0
    entries: int = 10_000
    # Changes per second reaching the caller's stream (the fleet's writes).
    changes_per_second: float = 0.0
    paying: int = 1
    seconds: float = 3600.0
    warmup_seconds: float = 1200.0
    seed: int = 29


@dataclass(frozen=True)
class CallerResult:
    hit_rate: float
    checks: int
    rpcs: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def simulate_caller(trace: CallerTrace) -> CallerResult:
    """One caller process's near cache over a session-structured trace."""
    rng = random.Random(trace.seed)
    draw = ZipfSampler(trace.users, trace.zipf_exponent, rng)
    cache: LRUCache[tuple[int, int], bool] = LRUCache(trace.entries)
    sessions_per_second = trace.checks_per_second / trace.checks_per_session
    events: list[tuple[float, int, int, int]] = []  # (time, kind, user, checks left)
    heapq.heappush(events, (rng.expovariate(sessions_per_second), 0, 0, 0))
    if trace.changes_per_second > 0:
        heapq.heappush(events, (rng.expovariate(trace.changes_per_second), 2, 0, 0))
    gap = trace.session_seconds / trace.checks_per_session
    checks = hits = 0
    while events:
        at, kind, user, left = heapq.heappop(events)
        if at >= trace.seconds:
            break
        if kind == 0:  # a session starts
            count = max(1, round(rng.expovariate(1 / trace.checks_per_session)))
            heapq.heappush(events, (at, 1, draw(), count))
            heapq.heappush(events, (at + rng.expovariate(sessions_per_second), 0, 0, 0))
        elif kind == 1:  # a check of the session's user
            key = (user, rng.randrange(trace.features_per_session))
            counted = at >= trace.warmup_seconds
            if key in cache:
                cache[key]  # a hit refreshes the entry's place in the LRU
                hits += counted
            else:
                cache[key] = True
            checks += counted
            if left > 1:
                heapq.heappush(events, (at + rng.expovariate(1 / gap), 1, user, left - 1))
        else:  # a change from the stream: the user's decisions go
            changed = rng.randint(1, trace.paying)
            for feature in range(trace.features_per_session):
                cache.pop((changed, feature), None)
            heapq.heappush(events, (at + rng.expovariate(trace.changes_per_second), 2, 0, 0))
    rate = hits / checks if checks else 0.0
    return CallerResult(hit_rate=rate, checks=checks, rpcs=checks - hits)
