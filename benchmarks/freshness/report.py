"""The freshness benchmark's JSON and Markdown (benchmarks/results/freshness-*.{json,md})."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write(result: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    commit = result.get("environment", {}).get("git_commit", "")[:8] or "nogit"
    stem = f"freshness-{time.strftime('%Y%m%d-%H%M%S')}-{commit}"
    json_path = folder / f"{stem}.json"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    markdown_path = folder / f"{stem}.md"
    markdown_path.write_text(markdown(result))
    return json_path, markdown_path


def _ms(summary: dict[str, Any] | None) -> str:
    """p50 / p99 / max in ms."""
    if not summary or not summary.get("count"):
        return "-"
    return f"{summary['p50_ms']:.1f} / {summary['p99_ms']:.1f} / {summary['max_ms']:.1f}"


def log_store(store: dict[str, Any], log: Callable[[str], None]) -> None:
    if "skipped" in store:
        log(f"{store['store']}: {store['skipped']}")
        return
    log(
        f"{store['store']}: write-to-visible p50/p99/max {_ms(store['write_to_visible_after_ack'])}"
        f" ms after ack; watch {_ms(store['watch_after_ack'])} ms"
        f" ({store['repetitions']} writes, not seen {store['not_seen_within_s']},"
        f" watch missed {store['watch_missed']})"
    )


def _store_rows(store: dict[str, Any]) -> list[str]:
    name = store["store"]
    if "skipped" in store:
        return [f"| {name} | {store['skipped']} | | | |"]
    n = store["repetitions"]
    return [
        f"| {name} | write-to-visible, from the write's ack (last of "
        f"{store['workers'] * store['readers_per_worker']} reader connections) | "
        f"{_ms(store['write_to_visible_after_ack'])} | {n} | {store['not_seen_within_s']} |",
        f"| {name} | write-to-visible, from the write's send | "
        f"{_ms(store['write_to_visible_after_send'])} | {n} | {store['not_seen_within_s']} |",
        f"| {name} | the other worker's readers, from the ack | "
        f"{_ms(store['other_worker_after_ack'])} | {n} | - |",
        f"| {name} | watch message on the other worker, from the ack | "
        f"{_ms(store['watch_after_ack'])} | {n} | {store['watch_missed']} |",
        f"| {name} | the write RPC itself | {_ms(store['write_rpc'])} | {n} | - |",
    ]


def _rps(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _load_line(store: dict[str, Any]) -> str:
    if "skipped" in store:
        return ""
    load = store.get("background_load")
    if not load:
        return f"- {store['store']}: no background load."
    return (
        f"- {store['store']}: background load by {load['loader']}: "
        f"{load['achieved_rps'] or 0:,.0f} rps achieved (target {load['target_rps']:,.0f}, "
        f"saturation measured {_rps(store.get('saturation_rps'))}) over "
        f"{load['connections']} connections, {load['not_ok']} not OK; "
        f"{store['workers']} workers x {store['readers_per_worker']} reader connections, "
        f"polls every {store['poll_interval_s'] * 1000:.0f} ms, a random pause of up to "
        f"{store['jitter_s'] * 1000:.0f} ms before each write; {store['seconds']} s; "
        f"failed writes (not measured): {len(store['failed_writes'])} "
        f"{sorted(set(store['failed_writes']))}; failed reads (tried again): "
        f"{store['failed_reads_retried']}."
    )


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Freshness benchmark, {result['created']}",
        "",
        f"`{result['command']}`; commit {result.get('environment', {}).get('git_commit', '')[:12]}",
        "",
        f"- uptime at start: `{result['uptime_at_start']}`",
        f"- uptime at end: `{result.get('uptime_at_end', '')}`",
        f"- server settings: {result['settings']}",
    ]
    if "error" in result:
        lines += ["", f"**Failed:** {result['error']}"]
    stores = [s for s in (result.get("sqlite"), result.get("spanner")) if s]
    if stores:
        lines += [
            "",
            "## Write-to-visible and watch notification latency",
            "",
            "Times in ms: p50 / p99 / max. A reader's time is when its read's answer showing",
            "the write arrived (it polls), so each includes up to a poll interval of its own.",
            "",
            "| store | what | p50 / p99 / max (ms) | writes | not seen / missed |",
            "|---|---|---:|---:|---:|",
        ]
        for store in stores:
            lines += _store_rows(store)
        lines += [""] + [line for s in stores if (line := _load_line(s))]
    cost = result.get("feed_cost")
    if cost:
        lines += [
            "",
            "## The feed's cost on the cache-hit path",
            "",
            f"{cost['scenario']}; h2load {cost['connections']} connections x 1 in flight, "
            f"{cost['seconds_per_run']} s per run after {cost['warmup_requests']} warm-up "
            f"requests; {cost['workers']} workers; runs taken in turns.",
            "",
            "| round | floor (rps) | feed on: rps (ratio) | feed off: rps (ratio) | not OK |",
            "|---:|---|---:|---:|---|",
        ]
        for run in cost["rounds"]:
            servers = run["servers"]
            on, off = servers["service, feed on"], servers["service, feed off"]
            lines.append(
                f"| {run['round']} | {run['floor']} ({servers[run['floor']]['rps']:,.0f}) | "
                f"{on['rps']:,.0f} ({run['ratio_feed_on']:.3f}) | "
                f"{off['rps']:,.0f} ({run['ratio_feed_off']:.3f}) | "
                + ", ".join(f"{name} {m['not_ok']}" for name, m in servers.items() if m["not_ok"])
                + " |"
            )
        lines += [
            "",
            f"Median ratio to the floor: feed on **{cost['median_ratio_feed_on']:.3f}**, "
            f"feed off **{cost['median_ratio_feed_off']:.3f}** (off - on = "
            f"{cost['ratio_difference_off_minus_on']:+.3f}); server CPU per RPC (median) "
            f"{cost['median_cpu_us_per_rpc_feed_on']:.0f} µs on, "
            f"{cost['median_cpu_us_per_rpc_feed_off']:.0f} µs off. The servers logged "
            f"'no change feed': {cost['no_feed_logged']}.",
        ]
    if "feed_cost_skipped" in result:
        lines += ["", f"The feed's cost was not measured: {result['feed_cost_skipped']}."]
    ttl = result.get("ttl_hit_rate")
    if ttl:
        spec = ttl["trace"]
        lines += [
            "",
            "## Cache hit rate by TTL (simulated trace through the real cache)",
            "",
            f"One worker: {spec['read_rate']:,.0f} reads/s for {spec['seconds'] / 60:.0f} "
            f"simulated minutes ({ttl['reads']:,} reads), Zipf(s={spec['zipf_exponent']}) over "
            f"{spec['users']:,} users; writes {spec['write_rate']:g}/s fleet-wide "
            f"({ttl['writes']:,}, Poisson, same Zipf users) dropped as the feed does; "
            f"cache bound {spec['max_entries']:,} entries; seed {spec['seed']}.",
            "",
            "| TTL (s) | hit rate | misses (store reads) | writes that dropped an entry | "
            "LRU evictions |",
            "|---:|---:|---:|---:|---:|",
        ]
        for row in ttl["results"]:
            lines.append(
                f"| {row['ttl_seconds']:,.0f} | {row['hit_rate']:.3f} | {row['misses']:,} | "
                f"{row['dropped']:,} | {row['evictions']:,} |"
            )
    return "\n".join(lines) + "\n"
