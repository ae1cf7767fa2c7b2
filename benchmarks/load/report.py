"""The run's output: one JSON file (environment, settings, every phase, the summary against
the floor, the targets, the verdict against the smoke bounds and a baseline run), a Markdown
report of the same and one latency-versus-offered-load PNG per scenario (plot.py).

This module builds the result and judges it (targets, verdict, smoke bounds) and writes the
files; environment.py says where it ran, figures.py turns the records into the figures
against the floor, markdown.py renders the report."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.load import compare as baseline_comparison
from benchmarks.load import scenarios
from benchmarks.load.environment import environment, h2load_version
from benchmarks.load.figures import floors, summarize
from benchmarks.load.markdown import markdown
from benchmarks.load.scenarios import SCENARIOS, Scenario

# 3: `verdict`, `comparison`, settings.scenarios; `smoke` (the bounds' verdict) in every run
# that measured the cache hit; open-loop records carry their measuring round (open_round).
SCHEMA_VERSION = 3


def targets(summary: dict[str, Any], compare: float) -> list[dict[str, Any]]:
    def median(key: str, figure: str) -> float | None:
        value = summary.get(key, {}).get("median", {}).get(figure)
        return None if value is None else float(value)

    rate = f"{scenarios.TARGET_MISS_RATE:.0f}rps"
    rows = [
        ("GetEntitlement cache hit: throughput / floor (h2load)",
         median("get_hit", "throughput_ratio"), ">=", scenarios.TARGET_HIT_THROUGHPUT_RATIO),
        ("GetEntitlement cache hit: p99 / floor p99, 1 RPC in flight (h2load)",
         median("get_hit", "latency_p99_ratio"), "<=", scenarios.TARGET_HIT_LATENCY_P99_RATIO),
        (f"GetEntitlement cache hit: p99 / floor p99 at {compare:.0%} of floor saturation "
         "(open loop)",
         median("get_hit", "p99_ratio_at_compare"), "<=", scenarios.TARGET_HIT_P99_RATIO),
        ("GetOffers cache hit: throughput / floor (h2load)",
         median("offers", "throughput_ratio"), ">=", scenarios.TARGET_OFFERS_THROUGHPUT_RATIO),
        ("BatchGetEntitlements(100): decisions per second (h2load)",
         median("batch", "decisions_per_second"),
         ">=", scenarios.TARGET_BATCH_DECISIONS_PER_SECOND),
        (f"Cache miss on SQLite, 10,000 users: p99 (us) at {rate} (open loop)",
         median("get_miss_sqlite", f"p99_us_at_{rate}"),
         "<", scenarios.TARGET_MISS_SQLITE_P99_US),
    ]  # fmt: skip
    result = []
    for name, measured, op, target in rows:
        result.append(
            {"target": name, "bound": f"{op} {target:g}", "measured": measured,
             "met": _holds(measured, op, target)}
        )  # fmt: skip
    return result


def _holds(measured: float | None, op: str, bound: float) -> bool | None:
    if measured is None:
        return None
    return {">=": measured >= bound, "<=": measured <= bound, "<": measured < bound}[op]


def build(
    records: list[dict[str, Any]],
    selected: list[Scenario],
    skipped: dict[str, str],
    args: argparse.Namespace,
    elapsed: float,
    baseline: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's result. `args.check` makes the smoke bounds decide the exit code;
    `baseline` (a run's JSON, named by args.compare) adds the comparison, which does too."""
    fractions = tuple(float(f) for f in args.loads.split(",") if f.strip())
    summary = summarize(
        records, [s for s in selected if s.floor], args.repeat, fractions, args.compare_fraction
    )
    result = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.load", *sys.argv[1:]]),
        "environment": environment(),
        "settings": {
            "smoke": args.smoke,
            "scenarios": [s.key for s in selected if s.floor],
            "workers": args.workers,
            "h2load": {
                "version": h2load_version(),
                "saturation_connections": args.h2load_connections * args.workers,
                "saturation_connections_per_worker": args.h2load_connections,
                "in_flight_per_connection": 1,
                "saturation_seconds": args.h2load_seconds,
                "saturation_warmup_requests": args.h2load_warmup,
                "latency_connections": 1,
                "latency_seconds": args.latency_seconds,
                "slices": args.h2load_slices,
            },
            "python_generators": args.generators,
            "python_closed_loop_in_flight": args.concurrency,
            "python_seconds_per_phase": args.seconds,
            "python_warmup_seconds": args.warmup,
            "open_loop_fractions": args.loads,
            "open_loop_slices": args.open_slices,
            "repeat": args.repeat,
            "compare_fraction": args.compare_fraction,
            "server_env": {
                "ENTITLEMENTS_MAX_CONCURRENT_RPCS": 64,
                "ENTITLEMENTS_CACHE_TTL_SECONDS": "3600 (cached), 0 (uncached)",
            },
        },
        "elapsed_seconds": round(elapsed, 1),
        "skipped": skipped,
        "floors": floors(records, args.repeat),
        "summary": summary,
        "targets": targets(summary, args.compare_fraction) if not args.smoke else [],
        "smoke_bounds": {
            "min_throughput_ratio": scenarios.SMOKE_MIN_THROUGHPUT_RATIO,
            "max_latency_p99_ratio": scenarios.SMOKE_MAX_LATENCY_P99_RATIO,
            "max_p99_ratio_at_compare": scenarios.SMOKE_MAX_P99_RATIO,
            "compare_fraction": scenarios.SMOKE_COMPARE_FRACTION,
            "max_error_fraction": scenarios.SMOKE_MAX_ERROR_FRACTION,
            "calibration": scenarios.SMOKE_CALIBRATION,
        },
        "phases": records,
    }
    checked = args.check or any(s.key == SMOKE_SCENARIO for s in selected)
    result["smoke"] = check_smoke(result) if checked else None
    result["comparison"] = (
        baseline_comparison.compare(
            result, baseline, baseline_comparison.thresholds_from(args), str(args.compare)
        )
        if baseline is not None
        else None
    )
    result["verdict"] = verdict(result, bounds_enforced=args.check)
    return result


def verdict(result: dict[str, Any], *, bounds_enforced: bool) -> dict[str, Any]:
    """The run's pass/fail: the smoke bounds (when the cache hit was measured) and the
    comparison with a baseline (when asked). `exit_code` is 1 when a part that decides
    it failed: the bounds with --check (--smoke), the comparison always."""
    parts = []
    failures = []
    exit_code = 0
    for name, part, enforced in (
        ("smoke bounds", result.get("smoke"), bounds_enforced),
        ("baseline", result.get("comparison"), True),
    ):
        if part is None:
            continue
        parts.append(
            {"name": name, "passed": part["passed"], "enforced": enforced,
             "failures": part["failures"]}
        )  # fmt: skip
        failures += [f"{name}: {failure}" for failure in part["failures"]]
        if enforced and not part["passed"]:
            exit_code = 1
    met = [t["met"] for t in result.get("targets", []) if t["met"] is not None]
    return {
        "passed": all(part["passed"] for part in parts) if parts else None,
        "parts": parts,
        "failures": failures,
        "exit_code": exit_code,
        "targets_met": f"{sum(met)} of {len(met)}" if met else None,
    }


SMOKE_SCENARIO = "get_hit"


def check_smoke(result: dict[str, Any]) -> dict[str, Any]:
    """The smoke's verdict on the cache-hit scenario (medians of the repeats) against
    the bounds of scenarios.py: every check with its bound, the measured value and
    whether it passed; `failures` says why in words. A full run measures the same figures
    (its open loop includes the smoke's fraction), so it is checked as well."""
    hit = result["summary"].get(SMOKE_SCENARIO)
    figures = hit["median"] if hit else {}
    fraction = scenarios.SMOKE_COMPARE_FRACTION
    tag = f"{round(fraction * 100)}pct"
    smoke_phases = (SMOKE_SCENARIO, SCENARIOS[SMOKE_SCENARIO].floor)
    worst = max(
        (r for r in result["phases"] if r["scenario"] in smoke_phases),
        key=lambda r: r["error_fraction"],
        default=None,
    )
    # (check, figure checked, measured, op, bound, the median of the slices' ratios)
    rows = [
        ("cache-hit throughput / floor (h2load saturation)", "throughput_ratio",
         figures.get("throughput_ratio"), ">=", scenarios.SMOKE_MIN_THROUGHPUT_RATIO,
         figures.get("throughput_ratio_by_slice")),
        ("cache-hit p99 / floor p99, 1 RPC in flight (h2load)", "latency_p99_ratio",
         figures.get("latency_p99_ratio"), "<=", scenarios.SMOKE_MAX_LATENCY_P99_RATIO,
         figures.get("latency_p99_ratio_by_slice")),
        (f"cache-hit p99 / floor p99, open loop at {fraction:.0%} of floor saturation",
         f"p99_ratio_at_{tag}", figures.get(f"p99_ratio_at_{tag}"),
         "<=", scenarios.SMOKE_MAX_P99_RATIO, figures.get(f"p99_ratio_by_slice_at_{tag}")),
        ("calls failing, the worst phase (fraction)", "max_error_fraction",
         worst["error_fraction"] if worst else None, "<=", scenarios.SMOKE_MAX_ERROR_FRACTION,
         None),
    ]  # fmt: skip
    checks = []
    failures = []
    if hit is None:
        failures.append(
            f"the {SMOKE_SCENARIO} scenario did not run"
            + (
                f": {result['skipped'][SMOKE_SCENARIO]}"
                if SMOKE_SCENARIO in result["skipped"]
                else ""
            )
        )
    for name, key, measured, op, bound, by_slice in rows:
        passed = bool(_holds(measured, op, bound))
        checks.append(
            {"check": name, "figure": key, "bound": f"{op} {bound:g}", "measured": measured,
             "median_of_slice_ratios": by_slice, "passed": passed}
        )  # fmt: skip
        if not passed:
            where = ""
            if key == "max_error_fraction" and worst is not None:
                where = f" ({worst['phase']}: {worst['errors']})"
            failures.append(f"{name}: {measured} is not {op} {bound:g}{where}")
    return {"passed": not failures, "checks": checks, "failures": failures}


@dataclass(frozen=True)
class Written:
    json: Path
    markdown: Path
    plots: list[Path]


def write(result: dict[str, Any], folder: Path, *, smoke: bool) -> Written:
    """The run's JSON, Markdown and one PNG per scenario (when matplotlib is installed)."""
    import json

    from benchmarks.load import plot

    folder.mkdir(parents=True, exist_ok=True)
    commit = result["environment"]["git_commit"][:8] or "nogit"
    stem = f"{'smoke' if smoke else 'load'}-{time.strftime('%Y%m%d-%H%M%S')}-{commit}"
    json_path = folder / f"{stem}.json"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    plots = plot.plot_scenarios(result, folder, stem)
    markdown_path = folder / f"{stem}.md"
    markdown_path.write_text(markdown(result, plots))
    return Written(json_path, markdown_path, plots)
