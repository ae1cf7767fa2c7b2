"""The scenarios a run measures, the floor each is compared with, the targets of issue 5
and the bounds the CI smoke enforces."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.load.plan import BATCH, GET, MIX, OFFERS, Workload

# Users of the cache-hit scenarios: 100 blocks of every demo situation, all cached.
HIT_USERS = 1_100
# Distinct users of the cache-miss scenarios (the 10,000).
MISS_USERS = 10_000
# The Spanner emulator is no performance model of Spanner: one user's load (a query with
# ARRAY subqueries over the interleaved tables) takes it ~25 ms with 220 users and over
# the service's 0.5 s store budget with 1,100 (it appears to scan), and seeding takes ~12 ms
# per user. So its scenario has few users (the cache is off: every read is a miss anyway),
# low rates and 4 RPCs in flight; it shows the Spanner code path working under load and
# its cost in the service, not how Spanner performs.
SPANNER_USERS = 110
SPANNER_RATES = (20.0, 50.0)
MIX_USERS = 2_200
BATCH_SIZE = 100

# Servers: the floor, and the service with its cache on, off, and on Spanner.
FLOOR = "floor"
CACHED = "service-cached"
UNCACHED = "service-uncached-sqlite"
SPANNER = "service-uncached-spanner"


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    title: str
    server: str
    workload: Workload
    floor: str = ""  # the floor scenario it is compared with ("" for a floor)
    method: str = "GetEntitlement"  # the RPC whose latency is the scenario's
    decisions: int = 1  # entitlement decisions per RPC
    # Extra open-loop rates (rps) measured besides the fractions of the floor's
    # saturation, for the scenario and its floor (the cache-miss target is at 500 rps).
    fixed_rates: tuple[float, ...] = ()
    # Open-loop points as fractions of the floor's saturation; None: the run's default.
    fractions: tuple[float, ...] | None = None
    # Closed loop: RPCs in flight in all (0: the run's --concurrency).
    concurrency: int = 0


SCENARIOS: dict[str, Scenario] = {
    s.key: s
    for s in (
        Scenario("floor_get", "floor: GetEntitlement", FLOOR, Workload(GET, HIT_USERS)),
        Scenario(
            "floor_offers", "floor: GetOffers", FLOOR, Workload(OFFERS, HIT_USERS),
            method="GetOffers",
        ),
        Scenario(
            "floor_batch", "floor: BatchGetEntitlements(100)", FLOOR,
            Workload(BATCH, HIT_USERS, batch_size=BATCH_SIZE),
            method="BatchGetEntitlements", decisions=BATCH_SIZE,
        ),
        Scenario(
            "get_hit", "GetEntitlement, cache hit", CACHED,
            Workload(GET, HIT_USERS, warm_cache=True), "floor_get",
        ),
        Scenario(
            "get_miss_sqlite", "GetEntitlement, cache miss, SQLite (10,000 users)", UNCACHED,
            Workload(GET, MISS_USERS), "floor_get", fixed_rates=(500.0,),
        ),
        Scenario(
            "get_miss_spanner", "GetEntitlement, cache miss, Spanner emulator", SPANNER,
            Workload(GET, SPANNER_USERS), "floor_get", fixed_rates=SPANNER_RATES, fractions=(),
            concurrency=4,
        ),
        Scenario(
            "offers", "GetOffers, cache hit", CACHED,
            Workload(OFFERS, HIT_USERS, warm_cache=True), "floor_offers", method="GetOffers",
        ),
        Scenario(
            "batch", "BatchGetEntitlements(100), cache hit", CACHED,
            Workload(BATCH, HIT_USERS, warm_cache=True, batch_size=BATCH_SIZE), "floor_batch",
            method="BatchGetEntitlements", decisions=BATCH_SIZE,
        ),
        Scenario(
            "mix", "GetEntitlement + 1% GrantEntitlement, consistency tokens", CACHED,
            Workload(MIX, MIX_USERS, warm_cache=True, write_fraction=0.01), "floor_get",
        ),
    )
}  # fmt: skip

# Measured in this order: each floor, then the scenarios compared with it. The Spanner
# emulator goes last: it keeps burning CPU on queued queries after its phases end.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("floor_get", ("get_hit", "get_miss_sqlite", "mix")),
    ("floor_offers", ("offers",)),
    ("floor_batch", ("batch",)),
    ("floor_get", ("get_miss_spanner",)),
)
SMOKE_SCENARIOS = ("get_hit",)

# The open-loop point at which p99 is compared with the floor's (issue 5: ~55%).
COMPARE_FRACTION = 0.55
DEFAULT_FRACTIONS = (0.25, COMPARE_FRACTION, 0.85)

# Issue 5's targets, checked and reported by a full run (ratios to the floor in the run).
TARGET_HIT_THROUGHPUT_RATIO = 0.95
TARGET_HIT_P99_RATIO = 1.2
TARGET_OFFERS_THROUGHPUT_RATIO = 0.90
TARGET_BATCH_DECISIONS_PER_SECOND = 100_000.0
TARGET_MISS_SQLITE_P99_US = 2_000.0
TARGET_MISS_RATE = 500.0

# The CI smoke (`--smoke`, ~35 s) measures the cache-hit scenario and its floor twice
# (closed loop, then open loop at SMOKE_COMPARE_FRACTION of the floor's saturation) and
# fails (exit 1) when the median of the two repeats passes these bounds. Measured on these
# 2-core machines (3 smoke runs, 2026-11): throughput ratio 0.78-0.85, p99 ratio at 25%
# 0.6-1.3 (single phases: 0.66-1.12 and up to 1.9). The bounds leave room for that noise and
# still catch a hit path that costs markedly more (about twice today's server CPU per
# RPC). A failing smoke blocks a landing, so both bounds are wide: in the last CI run one
# repeat's throughput ratio was 0.645 (floor 5,998 rps, the next repeat 4,618), and single
# p99 phases reached 1.9 on a quiet machine. The p99 comparison runs at
# 25% rather than 55%: at 55% the machine, shared with the Python load generator, is
# 80-95% busy and one p99 swings 1.2-5x between runs, so no useful bound fits there; the
# full run reports 55%.
SMOKE_COMPARE_FRACTION = 0.25
SMOKE_SECONDS = 2.5
SMOKE_WARMUP_SECONDS = 0.5
SMOKE_REPEAT = 2
SMOKE_MIN_THROUGHPUT_RATIO = 0.5
SMOKE_MAX_P99_RATIO = 3.0
# More than this fraction of calls failing (any status but OK) fails the smoke.
SMOKE_MAX_ERROR_FRACTION = 0.01
