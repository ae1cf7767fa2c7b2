"""The freshness benchmark's pure parts: latency summaries, the TTL replay through the
real cache, and the Markdown report (no servers)."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.freshness import report, ttl_replay
from benchmarks.freshness.stats import nearest_rank, summarize_seconds

SMALL = ttl_replay.TraceSpec(
    users=1_000, read_rate=100.0, write_rate=0.0, seconds=120.0, max_entries=10_000, seed=1
)


def test_nearest_rank_percentiles() -> None:
    samples = [float(v) for v in range(1, 101)]  # 1..100
    assert nearest_rank(samples, 50.0) == 50.0
    assert nearest_rank(samples, 99.0) == 99.0
    assert nearest_rank(samples, 100.0) == 100.0
    assert nearest_rank([7.0], 99.0) == 7.0


def test_summary_in_milliseconds_keeps_negative_samples() -> None:
    summary = summarize_seconds([0.030, -0.002, 0.010, 0.020])
    assert summary["count"] == 4
    assert summary["p50_ms"] == 10.0  # nearest rank: the 2nd of 4 sorted
    assert summary["p99_ms"] == summary["max_ms"] == 30.0
    assert summary["min_ms"] == -2.0
    assert summarize_seconds([])["p99_ms"] is None


def test_zipf_weights_favour_low_ranks() -> None:
    weights = ttl_replay.zipf_cumulative_weights(4, 1.0)
    assert weights == pytest.approx([1.0, 1.5, 1.5 + 1 / 3, 1.5 + 1 / 3 + 0.25])
    trace = ttl_replay.generate(SMALL)
    assert len(trace.reads) == 12_000
    assert trace.reads.count(0) > trace.reads.count(999) * 50
    assert ttl_replay.generate(SMALL).reads == trace.reads  # same seed, same trace


def test_without_expiry_or_writes_only_first_reads_miss() -> None:
    trace = ttl_replay.generate(SMALL)
    result = ttl_replay.replay(trace, ttl_seconds=3600.0)
    assert result.misses == len(set(trace.reads))
    assert result.hits + result.misses == result.reads == len(trace.reads)


def test_ttl_zero_never_hits_and_a_longer_ttl_hits_more() -> None:
    trace = ttl_replay.generate(SMALL)
    assert ttl_replay.replay(trace, ttl_seconds=0.0).hits == 0
    short = ttl_replay.replay(trace, ttl_seconds=5.0)
    long = ttl_replay.replay(trace, ttl_seconds=60.0)
    assert 0 < short.hit_rate < long.hit_rate < 1


def test_writes_drop_entries_and_cost_hits() -> None:
    writing = dataclasses.replace(SMALL, write_rate=5.0)
    quiet = ttl_replay.replay(ttl_replay.generate(SMALL), ttl_seconds=3600.0)
    trace = ttl_replay.generate(writing)
    written = ttl_replay.replay(trace, ttl_seconds=3600.0)
    assert len(trace.writes) > 300  # ~5/s for 120 s
    assert written.writes == len(trace.writes)
    assert written.dropped > 0
    assert written.misses > quiet.misses


def test_the_lru_bound_evicts() -> None:
    bounded = dataclasses.replace(SMALL, max_entries=100)
    result = ttl_replay.replay(ttl_replay.generate(bounded), ttl_seconds=3600.0)
    assert result.evictions > 0


def test_markdown_shows_each_part_and_skips() -> None:
    latency = summarize_seconds([0.05, 0.07])
    store = {
        "store": "sqlite",
        "workers": 2,
        "readers_per_worker": 2,
        "repetitions": 2,
        "not_seen_within_s": 0,
        "watch_missed": 0,
        "write_to_visible_after_ack": latency,
        "write_to_visible_after_send": latency,
        "other_worker_after_ack": latency,
        "watch_after_ack": latency,
        "write_rpc": latency,
        "background_load": None,
    }
    result = {
        "created": "now",
        "command": "python -m benchmarks.freshness",
        "uptime_at_start": "load average: 1.00",
        "settings": {},
        "sqlite": store,
        "spanner": {"store": "spanner-emulator", "skipped": "skipped: no Spanner change feed yet"},
        "ttl_hit_rate": ttl_replay.measure(SMALL, ttls=(30.0, 300.0)),
    }
    text = report.markdown(result)
    assert "| sqlite | write-to-visible, from the write's ack" in text
    assert "50.0 / 70.0 / 70.0" in text
    assert "skipped: no Spanner change feed yet" in text
    assert "| 30 |" in text
    assert "| 300 |" in text
