"""The capacity plan's tables (docs/CAPACITY.md), reproduced: the simulator measures the
hit rates, the model turns them into pods, nodes and cost.

    python -m benchmarks.capacity            # ~1 minute of CPU; Markdown on stdout
    python -m benchmarks.capacity --out DIR  # also the JSON

Fixed seeds: the same command prints the same tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from benchmarks.capacity.model import (
    MULTI_REGION,
    Answer,
    Demand,
    Fleet,
    ServerCosts,
    Spanner,
    answer,
    per_worker_reads_per_second,
)
from benchmarks.capacity.simulate import (
    CallerTrace,
    ServerTrace,
    diurnal,
    simulate_caller,
    simulate_servers,
)

ZIPF_EXPONENT = 1.0
CALLER_PROCESSES = 20_000


def simulate(
    demand: Demand, costs: ServerCosts, fleet: Fleet, diurnal_points: bool
) -> dict[str, Any]:
    """The hit rates of the demand's trace: workers at the peak (and at the mean and the
    trough of the diurnal curve), with user affinity, and a caller's near cache."""
    active = round(demand.users * demand.daily_active_fraction)
    peak_rate = per_worker_reads_per_second(costs)
    # Past the TTL (300 s) before counting: entries then expire as in a long run.
    seconds, warmup = 420.0, 300.0
    base = ServerTrace(
        users=active,
        zipf_exponent=ZIPF_EXPONENT,
        reads_per_worker_per_second=peak_rate,
        writes_per_second=demand.peak_writes_per_second,
        paying=demand.paying,
        pods=2,
        workers_per_pod=1,
        cache_entries=costs.cache_entries_per_worker,
        feed_poll_seconds=fleet.feed_poll_seconds,
        seconds=seconds,
        warmup_seconds=warmup,
    )
    results: dict[str, Any] = {"trace": asdict(base)}
    started = time.monotonic()
    peak = simulate_servers(base)
    results["peak"] = peak.as_dict()
    for label, hour in (("mean", 14.0), ("trough", 8.0)) if diurnal_points else ():
        # A fleet sized for the peak: off peak each worker reads less.
        rate = peak_rate * diurnal(hour, demand.peak_to_mean) / demand.peak_to_mean
        point = replace(base, reads_per_worker_per_second=rate, pods=1, workers_per_pod=1)
        results[label] = {"reads_per_worker_per_second": rate, **simulate_servers(point).as_dict()}
    # Ring-hash affinity on the user id: a worker sees 1/W of the users, each as often as
    # the whole fleet asks for them (W: the workers of the sized fleet).
    sized = answer(demand, costs, fleet, Spanner(), peak.hit_rate)
    total_workers = sized.pods * fleet.workers_per_pod
    affine = replace(base, users=max(1, active // total_workers), pods=1, workers_per_pod=1)
    results["affinity"] = {"workers": total_workers, **simulate_servers(affine).as_dict()}
    caller_rate = demand.peak_checks_per_second / CALLER_PROCESSES
    caller = CallerTrace(
        users=active,
        zipf_exponent=ZIPF_EXPONENT,
        checks_per_second=caller_rate,
        changes_per_second=demand.peak_writes_per_second,
        paying=demand.paying,
        seconds=2400.0,
        warmup_seconds=1200.0,
    )
    results["near_cache"] = {
        "trace": asdict(caller),
        "callers": CALLER_PROCESSES,
        **simulate_caller(caller).as_dict(),
    }
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


# The fleet shapes each plan compares: how calls reach the workers, and near caches.
SHAPES = ("random balancing", "user affinity", "random + near caches")


def plan(demand: Demand, costs: ServerCosts, fleet: Fleet, sim: dict[str, Any]) -> list[Answer]:
    """For regional and multi-region Spanner, each of SHAPES."""
    hit, affine = sim["peak"]["hit_rate"], sim["affinity"]["hit_rate"]
    near = sim["near_cache"]["hit_rate"]
    with_near = replace(fleet, near_cache_hit_rate=near, near_cache_callers=CALLER_PROCESSES)
    return [
        answer(demand, costs, shape, spanner, rate)
        for spanner in (Spanner(), MULTI_REGION)
        for shape, rate in ((fleet, hit), (fleet, affine), (with_near, hit))
    ]


def markdown(
    demand: Demand, costs: ServerCosts, fleet: Fleet, sim: dict[str, Any], answers: list[Answer]
) -> str:
    lines = [
        f"### {demand.name}: {demand.users / 1e6:,.0f} M users, "
        f"{demand.paying / 1e6:,.0f} M paying",
        "",
        f"Peak checks {demand.peak_checks_per_second:,.0f}/s (mean "
        f"{demand.mean_checks_per_second:,.0f}/s x {demand.peak_to_mean}), peak writes "
        f"{demand.peak_writes_per_second:,.0f}/s (mean {demand.mean_writes_per_second:,.0f}/s x "
        f"{demand.write_peak_to_mean}).",
        "",
        "| simulated (real `UserStateCache`, 100,000 entries, TTL 300 s) | reads/s per worker "
        "| hit rate |",
        "|---|---:|---:|",
        f"| peak, {sim['trace']['pods']} pods x {sim['trace']['workers_per_pod']} workers, random "
        f"balancing | {sim['trace']['reads_per_worker_per_second']:,.0f} | "
        f"{sim['peak']['hit_rate']:.3f} |",
        *(
            f"| {label} hour (a fleet sized for the peak) | "
            f"{sim[label]['reads_per_worker_per_second']:,.0f} | {sim[label]['hit_rate']:.3f} |"
            for label in ("mean", "trough")
            if label in sim
        ),
        f"| peak, user affinity (ring hash over {sim['affinity']['workers']:,} workers) | "
        f"{sim['trace']['reads_per_worker_per_second']:,.0f} | {sim['affinity']['hit_rate']:.3f} |",
        f"| a caller's near cache ({sim['near_cache']['callers']:,} callers, sessions of "
        f"{sim['near_cache']['trace']['checks_per_session']:.0f} checks) | "
        f"{sim['near_cache']['trace']['checks_per_second']:,.0f} | "
        f"{sim['near_cache']['hit_rate']:.3f} |",
        "",
        f"Feed reads counted in the simulation: {sim['peak']['feed_polls_per_pod_per_second']:.1f}"
        f" per pod per second (one reader per pod, a poll every {fleet.feed_poll_seconds} s), "
        f"whatever the workers per pod.",
        "",
        "| Spanner | fleet | hit rate (near) | RPCs/s | misses/s | pods x cores | memory/pod "
        "| feed reads/s (per-worker polling) | Spanner reads/s | nodes | $/month "
        "| $ per M checks |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    spanners = [name for name in ("regional", "multi-region") for _ in SHAPES]
    for result, spanner, shape in zip(answers, spanners, SHAPES * 2, strict=True):
        near = f" ({result.near_cache_hit_rate:.2f})" if result.near_cache_hit_rate else ""
        lines.append(
            f"| {spanner} | {shape} | {result.hit_rate:.2f}{near} | "
            f"{result.peak_rpcs_per_second:,.0f} | "
            f"{result.peak_misses_per_second:,.0f} | {result.pods:,} x {fleet.workers_per_pod} | "
            f"{result.memory_per_pod_gib:.1f} GiB | {result.feed_reads_per_second:,.0f} "
            f"({result.feed_reads_per_second_per_worker_polling:,.0f}) | "
            f"{result.spanner_reads_per_second:,.0f} | {result.spanner_nodes:,} | "
            f"{result.cost_per_month_usd:,.0f} | {result.cost_per_million_checks_usd:.3f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__)
    parser.add_argument("--out", type=Path, help="write capacity.json here too")
    args = parser.parse_args(argv)
    costs, fleet = ServerCosts(), Fleet()
    scenarios = [
        Demand(),
        Demand(name="one region (a third of the world)", users=200_000_000, paying=83_000_000),
    ]
    report: dict[str, Any] = {"costs": asdict(costs), "fleet": asdict(fleet), "scenarios": []}
    for index, demand in enumerate(scenarios):
        sim = simulate(demand, costs, fleet, diurnal_points=index == 0)
        answers = plan(demand, costs, fleet, sim)
        if index:
            print()
        print(markdown(demand, costs, fleet, sim, answers))
        sys.stdout.flush()
        report["scenarios"].append(
            {
                "demand": asdict(demand),
                "simulation": sim,
                "answers": [a.as_dict() for a in answers],
            }
        )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "capacity.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
