"""The capacity model and simulator (benchmarks.capacity, docs/CAPACITY.md): the model's
arithmetic on stated inputs, the simulator's counts on a small trace, and the document's
tables reproduced by the simulator's command (slow: about a minute of CPU)."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.capacity.model import MULTI_REGION, Demand, Fleet, ServerCosts, Spanner, answer
from benchmarks.capacity.simulate import (
    CallerTrace,
    ServerTrace,
    ZipfSampler,
    diurnal,
    simulate_caller,
    simulate_servers,
)

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- capacity tables: begin -->", "<!-- capacity tables: end -->"


def test_one_feed_reader_per_pod_reads_pods_times_polls_not_workers() -> None:
    fleet = Fleet(workers_per_pod=8)
    result = answer(Demand(), ServerCosts(), fleet, Spanner(), hit_rate=0.5)
    assert result.feed_reads_per_second == result.pods * 10
    assert result.feed_reads_per_second_per_worker_polling == result.pods * 80


def test_a_higher_hit_rate_needs_fewer_spanner_nodes_and_near_caches_fewer_pods() -> None:
    demand, costs, fleet = Demand(), ServerCosts(), Fleet()
    low = answer(demand, costs, fleet, Spanner(), hit_rate=0.5)
    high = answer(demand, costs, fleet, Spanner(), hit_rate=0.8)
    assert high.spanner_nodes < low.spanner_nodes
    assert high.peak_misses_per_second == pytest.approx(0.2 * high.peak_rpcs_per_second)
    near = answer(demand, costs, replace(fleet, near_cache_hit_rate=0.75), Spanner(), 0.5)
    assert near.peak_rpcs_per_second == pytest.approx(0.25 * demand.peak_checks_per_second)
    assert near.pods < low.pods
    multi = answer(demand, costs, fleet, MULTI_REGION, hit_rate=0.5)
    assert multi.cost_per_month_usd > low.cost_per_month_usd


def test_the_diurnal_curve_peaks_at_its_peak_factor_and_averages_one() -> None:
    assert diurnal(20, 1.7) == pytest.approx(1.7)
    assert sum(diurnal(hour / 10, 1.7) for hour in range(240)) / 240 == pytest.approx(1.0)


def test_the_zipf_sampler_favours_low_ranks_and_stays_in_range() -> None:
    draw = ZipfSampler(1_000_000, 1.0, random.Random(1))
    ranks = [draw() for _ in range(20_000)]
    assert min(ranks) >= 1
    assert max(ranks) <= 1_000_000
    top = sum(rank <= 1_000 for rank in ranks) / len(ranks)
    # H(1,000) / H(1,000,000) = 7.49 / 14.39 = 0.52 for the discrete distribution.
    assert 0.45 < top < 0.60


def test_the_simulated_pods_count_one_feed_poll_per_pod_and_cache_the_popular() -> None:
    trace = ServerTrace(
        users=1_000,
        zipf_exponent=1.0,
        reads_per_worker_per_second=200,
        writes_per_second=5,
        paying=1_000,
        pods=2,
        workers_per_pod=3,
        cache_entries=2_000,
        seconds=20,
        warmup_seconds=5,
    )
    result = simulate_servers(trace)
    assert result.feed_polls_per_pod_per_second == pytest.approx(10.0)
    assert result.hit_rate > 0.8  # every user fits: only first reads and written users miss
    assert result.dropped > 0  # writes reached the workers through the feed
    small = simulate_servers(replace(trace, cache_entries=50))
    assert small.hit_rate < result.hit_rate
    assert small.evictions > 0


def test_a_callers_near_cache_hits_within_sessions() -> None:
    trace = CallerTrace(
        users=100_000, zipf_exponent=1.0, checks_per_second=20, seconds=600, warmup_seconds=200
    )
    result = simulate_caller(trace)
    # 12 checks of 3 features a session: about 3 misses in 12 at most.
    assert 0.6 < result.hit_rate < 0.85, result


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_documents_tables_are_what_the_simulator_prints() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "benchmarks.capacity"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    ).stdout
    document = (ROOT / "docs" / "CAPACITY.md").read_text()
    block = re.search(re.escape(BEGIN) + r"\n(.*)\n" + re.escape(END), document, re.S)
    assert block, "docs/CAPACITY.md has no capacity tables block"
    assert block.group(1).strip() == printed.strip()
