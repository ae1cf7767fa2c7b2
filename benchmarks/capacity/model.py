"""The capacity model (docs/CAPACITY.md): from a fleet's demand to pods, cores, memory,
Spanner nodes, feed reads and cost. Pure arithmetic over stated inputs; the simulator
(benchmarks.capacity.simulate) measures the inputs that are not constants here (the
cache hit rates) and checks the feed load by counting.

Every input is a field with its source: `measured` here (benchmarks of this repository,
on 2-core machines), `published` (Cloud Spanner's per-node figures), or `assumed` (a
product or price figure to replace with your own).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

SECONDS_PER_DAY = 86_400.0
HOURS_PER_MONTH = 730.0


@dataclass(frozen=True)
class Demand:
    """Who asks, how often (assumed: a large music streaming product)."""

    name: str = "the world"
    users: int = 600_000_000  # monthly active users
    paying: int = 250_000_000
    daily_active_fraction: float = 0.5
    # Entitlement checks per daily active user per day (playback starts, paywalls,
    # downloads, account pages).
    checks_per_active_user_per_day: float = 200.0
    # Peak of the diurnal curve over its mean (a sinusoid of amplitude peak-1 over a day:
    # benchmarks.capacity.simulate.diurnal).
    peak_to_mean: float = 1.7
    # Writes: renewals (monthly plans renew every ~30 days), purchases and cancellations,
    # refunds, grants and household changes, per paying user per day.
    renewals_per_paying_per_day: float = 1 / 30
    other_writes_per_paying_per_day: float = 0.01
    # Renewal notifications bunch up (stores renew at period ends around the clock, with
    # retries): the write peak over the write mean.
    write_peak_to_mean: float = 3.0
    # Offers (GetOffers) per check: paywalls are a small share of checks.
    offers_per_check: float = 0.05

    @property
    def mean_checks_per_second(self) -> float:
        active = self.users * self.daily_active_fraction
        return active * self.checks_per_active_user_per_day / SECONDS_PER_DAY

    @property
    def peak_checks_per_second(self) -> float:
        return self.mean_checks_per_second * self.peak_to_mean

    @property
    def mean_writes_per_second(self) -> float:
        per_day = self.paying * (
            self.renewals_per_paying_per_day + self.other_writes_per_paying_per_day
        )
        return per_day / SECONDS_PER_DAY

    @property
    def peak_writes_per_second(self) -> float:
        return self.mean_writes_per_second * self.write_peak_to_mean


@dataclass(frozen=True)
class ServerCosts:
    """Server CPU per RPC (measured: benchmarks.load, h2load, server CPU from /proc;
    docs/PERFORMANCE.md and docs/CAPACITY.md) and memory (benchmarks.memory)."""

    # Cache-hit GetEntitlement on an aio worker: 331-350 us on a quiet machine (the
    # previous round's 3 runs; 589 us in this round's run on a machine loaded by other
    # work, where the aio floor took 471 instead of 343-433).
    cpu_us_per_hit: float = 340.0
    # A miss costs 2.13x a hit on SQLite (1,253 vs 589 us in the same busy run: the store
    # thread hop, the load, the decision): 1.13 x 340. Spanner's client costs more per
    # read than SQLite's; not measurable here (the emulator is no model of its CPU).
    cpu_us_per_miss_extra: float = 385.0
    # GetOffers on a cached user: 1.05x a hit in the same run.
    cpu_us_per_offers: float = 355.0
    # A write with its transaction (assumed; writes are ~0.03% of calls).
    cpu_us_per_write: float = 1_500.0
    # A near-cache caller's change stream (assumed until `make bench-client` measures
    # it): one message per feed batch (at most one per poll interval) and a little per
    # change in it.
    cpu_us_per_stream_batch: float = 50.0
    cpu_us_per_stream_change: float = 2.0
    # Run cores at this utilisation at peak (the rest absorbs bursts and a lost pod).
    target_utilisation: float = 0.6
    # Memory of a worker without its cache, and bytes per cached user (a mix of free
    # users, 386 B, and users with stored state, 1,290 B with one decision).
    worker_base_mib: float = 90.0
    bytes_per_cached_user: float = 800.0
    cache_entries_per_worker: int = 100_000


@dataclass(frozen=True)
class Fleet:
    """How the pods are shaped (assumed) and how they follow the feed."""

    workers_per_pod: int = 4  # one per core
    feed_poll_seconds: float = 0.1
    # Store reads of one feed poll (Spanner: one Read of 16 shard ranges, counted as one).
    store_reads_per_poll: float = 1.0
    # Checks answered by callers' near caches without an RPC (0: no near cache); from
    # the simulator.
    near_cache_hit_rate: float = 0.0
    # Caller processes holding a change stream (each gets every change once).
    near_cache_callers: int = 0


@dataclass(frozen=True)
class Spanner:
    """Published per-node throughput (1 node = 1,000 processing units) and list prices
    (assumed: replace with your contract's)."""

    configuration: str = "regional"
    reads_per_node: float = 22_500.0  # regional; 15,000 per region in multi-region
    # Regions whose replicas serve reads (each its own share of the fleet's reads).
    read_regions: int = 1
    writes_per_node: float = 3_500.0  # regional; 2,700 in multi-region
    # Spanner advises staying below 65% high-priority CPU (regional), 45% (multi-region).
    target_utilisation: float = 0.65
    # Rows a write touches, as writes of the published kind (state, event, change, replay).
    rows_written_per_write: float = 4.0
    # A write transaction also reads the user's state.
    reads_per_write: float = 1.0
    node_hour_usd: float = 0.90
    # Compute list price per core-hour and per GiB-hour (assumed).
    core_hour_usd: float = 0.035
    gib_hour_usd: float = 0.0045


MULTI_REGION = Spanner(
    configuration="multi-region (reads in each of 3 read-write/read-only regions)",
    reads_per_node=15_000.0,
    read_regions=3,
    writes_per_node=2_700.0,
    target_utilisation=0.45,
    # A one-continent multi-region configuration's list price (assumed); configurations
    # spanning continents cost more per node-hour.
    node_hour_usd=3.00,
)


@dataclass(frozen=True)
class Answer:
    demand: str
    hit_rate: float
    near_cache_hit_rate: float
    peak_checks_per_second: float
    peak_rpcs_per_second: float
    peak_misses_per_second: float
    peak_writes_per_second: float
    cores: int
    pods: int
    memory_per_pod_gib: float
    feed_reads_per_second: float
    feed_reads_per_second_per_worker_polling: float
    spanner_nodes: int
    spanner_reads_per_second: float
    spanner_writes_per_second: float
    cost_per_month_usd: float
    cost_per_million_checks_usd: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def answer(
    demand: Demand,
    costs: ServerCosts,
    fleet: Fleet,
    spanner: Spanner,
    hit_rate: float,
) -> Answer:
    """What the fleet needs at peak, with `hit_rate` the workers' cache hit rate."""
    checks = demand.peak_checks_per_second
    rpcs = checks * (1 - fleet.near_cache_hit_rate)
    offers = rpcs * demand.offers_per_check
    misses = rpcs * (1 - hit_rate)
    writes = demand.peak_writes_per_second
    # Every change goes to every near-cache caller once (a write changes ~1.1 users), in
    # at most one batch per poll interval per stream.
    stream_changes = writes * 1.1 * fleet.near_cache_callers
    stream_batches = fleet.near_cache_callers * min(writes * 1.1, 1 / fleet.feed_poll_seconds)
    cpu_seconds = (
        rpcs * costs.cpu_us_per_hit
        + misses * costs.cpu_us_per_miss_extra
        + offers * (costs.cpu_us_per_offers - costs.cpu_us_per_hit)
        + writes * costs.cpu_us_per_write
        + stream_changes * costs.cpu_us_per_stream_change
        + stream_batches * costs.cpu_us_per_stream_batch
    ) / 1e6
    cores = math.ceil(cpu_seconds / costs.target_utilisation)
    pods = max(2, math.ceil(cores / fleet.workers_per_pod))
    cores = pods * fleet.workers_per_pod
    worker_mib = costs.worker_base_mib + (
        costs.cache_entries_per_worker * costs.bytes_per_cached_user / 2**20
    )
    memory_per_pod_gib = fleet.workers_per_pod * worker_mib / 1024
    feed_reads = pods * fleet.store_reads_per_poll / fleet.feed_poll_seconds
    per_worker_feed_reads = feed_reads * fleet.workers_per_pod
    spanner_reads = misses + feed_reads + writes * spanner.reads_per_write
    spanner_writes = writes * spanner.rows_written_per_write
    nodes = max(
        1,
        math.ceil(
            (
                spanner_reads / (spanner.reads_per_node * spanner.read_regions)
                + spanner_writes / spanner.writes_per_node
            )
            / spanner.target_utilisation
        ),
    )
    monthly = HOURS_PER_MONTH * (
        nodes * spanner.node_hour_usd
        + cores * spanner.core_hour_usd
        + pods * memory_per_pod_gib * spanner.gib_hour_usd
    )
    # The month's checks at the mean rate (the fleet is sized for the peak).
    monthly_checks = demand.mean_checks_per_second * HOURS_PER_MONTH * 3600
    return Answer(
        demand=demand.name,
        hit_rate=hit_rate,
        near_cache_hit_rate=fleet.near_cache_hit_rate,
        peak_checks_per_second=checks,
        peak_rpcs_per_second=rpcs,
        peak_misses_per_second=misses,
        peak_writes_per_second=writes,
        cores=cores,
        pods=pods,
        memory_per_pod_gib=memory_per_pod_gib,
        feed_reads_per_second=feed_reads,
        feed_reads_per_second_per_worker_polling=per_worker_feed_reads,
        spanner_nodes=nodes,
        spanner_reads_per_second=spanner_reads,
        spanner_writes_per_second=spanner_writes,
        cost_per_month_usd=monthly,
        cost_per_million_checks_usd=monthly / monthly_checks * 1e6,
    )


def per_worker_reads_per_second(costs: ServerCosts) -> float:
    """The read rate one worker sees at peak when the fleet runs at its target
    utilisation: what the simulator replays through one worker's cache."""
    per_rpc_us = costs.cpu_us_per_hit * 1.1  # misses and offers cost a little more
    return costs.target_utilisation * 1e6 / per_rpc_us
