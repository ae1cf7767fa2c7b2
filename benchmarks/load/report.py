"""The run's output: one JSON file (environment, settings, every phase, the summary against
the floor, the targets), a Markdown table and a latency-versus-offered-load PNG."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.load import scenarios
from benchmarks.load.plan import CLOSED, OPEN
from benchmarks.load.scenarios import SCENARIOS, Scenario

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_VERSION = 1


def environment() -> dict[str, Any]:
    import google.protobuf
    import grpc

    def git(*command: str) -> str:
        try:
            return subprocess.run(
                ["git", *command], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "load_average_at_end": [round(v, 2) for v in load],
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _find(
    records: list[dict[str, Any]],
    scenario: str,
    repeat: int,
    shape: str,
    *,
    fraction: float | None = None,
    rate: float | None = None,
) -> dict[str, Any] | None:
    for record in records:
        if (
            record["scenario"] == scenario
            and record["repeat"] == repeat
            and record["shape"] == shape
            and (fraction is None or record["load_fraction"] == fraction)
            and (
                rate is None or (record["load_fraction"] is None and record["offered_rps"] == rate)
            )
        ):
            return record
    return None


def _latency(record: dict[str, Any] | None, method: str, key: str) -> float | None:
    if record is None:
        return None
    value = record["methods"].get(method, {}).get(key)
    return None if value is None else float(value)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def scenario_figures(
    records: list[dict[str, Any]],
    scenario: Scenario,
    repeat: int,
    fractions: tuple[float, ...],
    compare: float,
) -> dict[str, Any]:
    floor = SCENARIOS[scenario.floor]
    closed = _find(records, scenario.key, repeat, CLOSED)
    floor_closed = _find(records, floor.key, repeat, CLOSED)
    figures: dict[str, Any] = {}
    if closed and floor_closed:
        rps = float(closed["achieved_rps"])
        floor_rps = float(floor_closed["achieved_rps"])
        figures.update(
            throughput_rps=rps,
            floor_throughput_rps=floor_rps,
            throughput_ratio=_ratio(rps, floor_rps),
            server_cpu_us_per_rpc=closed["server_cpu_us_per_rpc"],
            floor_server_cpu_us_per_rpc=floor_closed["server_cpu_us_per_rpc"],
            server_cpu_ratio=_ratio(
                closed["server_cpu_us_per_rpc"], floor_closed["server_cpu_us_per_rpc"]
            ),
            generator_cpu_us_per_rpc=closed["generator_cpu_us_per_rpc"],
            decisions_per_second=round(
                closed["methods"].get(scenario.method, {}).get("rps", 0.0) * scenario.decisions
            ),
            closed_p99_us=_latency(closed, scenario.method, "p99_us"),
            floor_closed_p99_us=_latency(floor_closed, floor.method, "p99_us"),
        )
    for fraction in fractions:
        opened = _find(records, scenario.key, repeat, OPEN, fraction=fraction)
        floor_opened = _find(records, floor.key, repeat, OPEN, fraction=fraction)
        if not (opened and floor_opened):
            continue
        tags = [f"{round(fraction * 100)}pct"] + (["compare"] if fraction == compare else [])
        for tag in tags:
            for key in ("p50_us", "p99_us", "p99_9_us"):
                mine = _latency(opened, scenario.method, key)
                theirs = _latency(floor_opened, floor.method, key)
                figures[f"{key}_at_{tag}"] = mine
                figures[f"floor_{key}_at_{tag}"] = theirs
                figures[f"{key.removesuffix('_us')}_ratio_at_{tag}"] = _ratio(mine, theirs)
            figures[f"rate_rps_at_{tag}"] = opened["offered_rps"]
            figures[f"achieved_rps_at_{tag}"] = opened["achieved_rps"]
            figures[f"server_cpu_us_per_rpc_at_{tag}"] = opened["server_cpu_us_per_rpc"]
            figures[f"floor_server_cpu_us_per_rpc_at_{tag}"] = floor_opened["server_cpu_us_per_rpc"]
    for rate in scenario.fixed_rates:
        fixed = _find(records, scenario.key, repeat, OPEN, rate=rate)
        floor_fixed = _find(records, floor.key, repeat, OPEN, rate=rate)
        tag = f"{rate:.0f}rps"
        figures[f"p50_us_at_{tag}"] = _latency(fixed, scenario.method, "p50_us")
        figures[f"p99_us_at_{tag}"] = _latency(fixed, scenario.method, "p99_us")
        figures[f"floor_p99_us_at_{tag}"] = _latency(floor_fixed, floor.method, "p99_us")
        figures[f"errors_at_{tag}"] = sum(fixed["errors"].values()) if fixed else None
    return figures


def _median(values: list[Any]) -> Any:
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not numbers:
        return None
    return round(statistics.median(numbers), 3)


def summarize(
    records: list[dict[str, Any]],
    selected: list[Scenario],
    repeats: int,
    fractions: tuple[float, ...],
    compare: float,
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for scenario in selected:
        runs = [scenario_figures(records, scenario, r, fractions, compare) for r in range(repeats)]
        if not any(runs):
            continue
        keys = sorted({k for run in runs for k in run})
        summary[scenario.key] = {
            "title": scenario.title,
            "runs": runs,
            "median": {k: _median([run.get(k) for run in runs]) for k in keys},
        }
    return summary


def targets(summary: dict[str, Any], compare: float) -> list[dict[str, Any]]:
    def median(key: str, figure: str) -> float | None:
        value = summary.get(key, {}).get("median", {}).get(figure)
        return None if value is None else float(value)

    rate = f"{scenarios.TARGET_MISS_RATE:.0f}rps"
    rows = [
        ("GetEntitlement cache hit: throughput / floor", median("get_hit", "throughput_ratio"),
         ">=", scenarios.TARGET_HIT_THROUGHPUT_RATIO),
        (f"GetEntitlement cache hit: p99 / floor p99 at {compare:.0%} of floor saturation",
         median("get_hit", "p99_ratio_at_compare"),
         "<=", scenarios.TARGET_HIT_P99_RATIO),
        ("GetOffers: throughput / floor", median("offers", "throughput_ratio"),
         ">=", scenarios.TARGET_OFFERS_THROUGHPUT_RATIO),
        ("BatchGetEntitlements(100): decisions per second",
         median("batch", "decisions_per_second"),
         ">=", scenarios.TARGET_BATCH_DECISIONS_PER_SECOND),
        (f"Cache miss on SQLite, 10,000 users: p99 (us) at {rate}",
         median("get_miss_sqlite", f"p99_us_at_{rate}"),
         "<", scenarios.TARGET_MISS_SQLITE_P99_US),
    ]  # fmt: skip
    result = []
    for name, measured, op, target in rows:
        met = None
        if measured is not None:
            met = {">=": measured >= target, "<=": measured <= target, "<": measured < target}[op]
        result.append(
            {"target": name, "bound": f"{op} {target:g}", "measured": measured, "met": met}
        )
    return result


def build(
    records: list[dict[str, Any]],
    selected: list[Scenario],
    skipped: dict[str, str],
    args: argparse.Namespace,
    elapsed: float,
) -> dict[str, Any]:
    fractions = tuple(float(f) for f in args.loads.split(",") if f.strip())
    summary = summarize(
        records, [s for s in selected if s.floor], args.repeat, fractions, args.compare
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.load", *sys.argv[1:]]),
        "environment": environment(),
        "settings": {
            "smoke": args.smoke,
            "workers": args.workers,
            "generators": args.generators,
            "closed_loop_in_flight": args.concurrency,
            "seconds_per_phase": args.seconds,
            "warmup_seconds": args.warmup,
            "open_loop_fractions": args.loads,
            "repeat": args.repeat,
            "compare_fraction": args.compare,
            "server_env": {
                "ENTITLEMENTS_MAX_CONCURRENT_RPCS": 64,
                "ENTITLEMENTS_CACHE_TTL_SECONDS": "3600 (cached), 0 (uncached)",
            },
        },
        "elapsed_seconds": round(elapsed, 1),
        "skipped": skipped,
        "summary": summary,
        "targets": targets(summary, args.compare) if not args.smoke else [],
        "smoke_bounds": {
            "min_throughput_ratio": scenarios.SMOKE_MIN_THROUGHPUT_RATIO,
            "max_p99_ratio_at_compare": scenarios.SMOKE_MAX_P99_RATIO,
            "max_error_fraction": scenarios.SMOKE_MAX_ERROR_FRACTION,
        },
        "phases": records,
    }


def check_smoke(result: dict[str, Any]) -> list[str]:
    """The cache-hit scenario's regressions past the smoke bounds (empty: none)."""
    hit = result["summary"].get("get_hit")
    if hit is None:
        return ["the get_hit scenario did not run"]
    figures = hit["median"]
    compare = result["settings"]["compare_fraction"]
    failures = []
    throughput = figures.get("throughput_ratio")
    if throughput is None or throughput < scenarios.SMOKE_MIN_THROUGHPUT_RATIO:
        failures.append(
            f"cache-hit throughput ratio to the floor {throughput} < "
            f"{scenarios.SMOKE_MIN_THROUGHPUT_RATIO}"
        )
    p99 = figures.get("p99_ratio_at_compare")
    if p99 is None or p99 > scenarios.SMOKE_MAX_P99_RATIO:
        failures.append(
            f"cache-hit p99 ratio to the floor at {compare:.0%} load {p99} > "
            f"{scenarios.SMOKE_MAX_P99_RATIO}"
        )
    for record in result["phases"]:
        if record["error_fraction"] > scenarios.SMOKE_MAX_ERROR_FRACTION:
            failures.append(f"{record['phase']}: errors {record['errors']}")
    return failures


# -- files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    json: Path
    markdown: Path
    plot: Path | None


def write(result: dict[str, Any], folder: Path, *, smoke: bool) -> Written:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    commit = result["environment"]["git_commit"][:8] or "nogit"
    stem = f"{'smoke' if smoke else 'load'}-{time.strftime('%Y%m%d-%H%M%S')}-{commit}"
    json_path = folder / f"{stem}.json"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    plot_path = None if smoke else plot(result, folder / f"{stem}.png")
    markdown_path = folder / f"{stem}.md"
    markdown_path.write_text(markdown(result, plot_path))
    return Written(json_path, markdown_path, plot_path)


def _fmt(value: Any, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}{suffix}"
    if isinstance(value, (int, float)):
        return f"{value:,.0f}{suffix}"
    return str(value)


def markdown(result: dict[str, Any], plot_path: Path | None) -> str:
    env = result["environment"]
    settings = result["settings"]
    lines = [
        f"# Load benchmark, {result['created']}",
        "",
        f"`{result['command']}`: commit {env['git_commit'][:12]}"
        + (" (uncommitted changes)" if env["git_dirty"] else "")
        + f", {env['cpu_count']} CPUs ({env['cpu_model']}), Python {env['python']}, "
        f"grpcio {env['grpcio']}, protobuf {env['protobuf']}; {settings['workers']} server "
        f"workers, {settings['generators']} load generator processes, closed loop "
        f"{settings['closed_loop_in_flight']} in flight, {settings['seconds_per_phase']:g} s "
        f"measured per phase after {settings['warmup_seconds']:g} s warm-up, "
        f"{settings['repeat']} repeat(s); took {result['elapsed_seconds']:.0f} s.",
        "",
        "Ratios are to the empty-handler floor measured in the same run (same workers, "
        "same grpc.Server options, no interceptors, constant responses); with several "
        "repeats each figure is the median of the per-repeat values. Latencies in µs.",
        "",
        "| scenario | closed-loop rps | / floor | server CPU µs/RPC (floor) | "
        f"open loop at {settings['compare_fraction']:.0%} of floor: rps | p50 (floor) | "
        "p99 (floor) | p99 / floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, entry in result["summary"].items():
        m = entry["median"]
        lines.append(
            f"| {entry['title']} | {_fmt(m.get('throughput_rps'))} | "
            f"{_fmt(m.get('throughput_ratio'), 2)} | {_fmt(m.get('server_cpu_us_per_rpc'))} "
            f"({_fmt(m.get('floor_server_cpu_us_per_rpc'))}) | "
            f"{_fmt(m.get('rate_rps_at_compare'))} | {_fmt(m.get('p50_us_at_compare'))} "
            f"({_fmt(m.get('floor_p50_us_at_compare'))}) | {_fmt(m.get('p99_us_at_compare'))} "
            f"({_fmt(m.get('floor_p99_us_at_compare'))}) | "
            f"{_fmt(m.get('p99_ratio_at_compare'), 2)} |"
        )
        del key
    if result["targets"]:
        lines += ["", "## Targets (issue 5)", "", "| target | bound | measured | met |"]
        lines.append("|---|---|---:|---|")
        for t in result["targets"]:
            met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
            lines.append(f"| {t['target']} | {t['bound']} | {_fmt(t['measured'], 2)} | {met} |")
    extra = [
        (key, k, v)
        for key, entry in result["summary"].items()
        for k, v in entry["median"].items()
        if "rps" in k and k.startswith("p99_us_at_")
    ]
    if extra:
        lines += ["", "Fixed-rate points: " + "; ".join(
            f"{key} p99 at {k.removeprefix('p99_us_at_')}: {_fmt(v)} µs" for key, k, v in extra
        ) + "."]  # fmt: skip
    if result["skipped"]:
        lines += [""] + [f"Skipped {k}: {v}." for k, v in result["skipped"].items()]
    lines += [
        "",
        "## Every phase",
        "",
        "| # | phase | offered rps | achieved rps | p50 | p90 | p99 | p99.9 | max | "
        "server CPU µs/RPC | generator CPU µs/RPC | machine busy | send lag p99 | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["phases"]:
        method = SCENARIOS[r["scenario"]].method
        lat = r["methods"].get(method, {})
        percentiles = " | ".join(
            _fmt(lat.get(k)) for k in ("p50_us", "p90_us", "p99_us", "p99_9_us", "max_us")
        )
        lines.append(
            f"| {r['repeat']} | {r['phase']} | {_fmt(r['offered_rps'])} | "
            f"{_fmt(r['achieved_rps'])} | {percentiles} | "
            f"{_fmt(r['server_cpu_us_per_rpc'])} | {_fmt(r['generator_cpu_us_per_rpc'])} | "
            f"{r['machine_busy_fraction']:.0%} | {_fmt(r['send_lag_p99_us'])} | "
            f"{', '.join(f'{k} {v}' for k, v in r['errors'].items()) or '-'} |"
        )
    if plot_path is not None:
        lines += ["", f"![latency versus offered load]({plot_path.name})"]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """p50 (dashed) and p99 (solid) against offered load, one panel per floor group."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot", flush=True)
        return None
    records = [r for r in result["phases"] if r["shape"] == OPEN]
    merged: dict[str, list[str]] = {}
    for group_floor, group_members in scenarios.GROUPS:
        merged.setdefault(group_floor, []).extend(group_members)
    groups = [(f, m) for f, m in merged.items() if any(r["scenario"] == f for r in records)]
    if not groups:
        return None
    figure, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 5), squeeze=False)
    for axis, (floor_key, members) in zip(axes[0], groups, strict=True):
        for key in (floor_key, *members):
            scenario = SCENARIOS[key]
            mine = [r for r in records if r["scenario"] == key and r["repeat"] == 0]
            mine.sort(key=lambda r: r["offered_rps"])
            points = [
                (r["offered_rps"], r["methods"][scenario.method])
                for r in mine
                if scenario.method in r["methods"]
            ]
            if not points:
                continue
            color = "black" if key == floor_key else None
            xs = [x for x, _ in points]
            (line,) = axis.plot(
                xs, [m["p99_us"] / 1000 for _, m in points], "o-", color=color,
                label=f"{scenario.title} p99",
            )  # fmt: skip
            axis.plot(
                xs, [m["p50_us"] / 1000 for _, m in points], "s--", color=line.get_color(),
                alpha=0.7, label=f"{scenario.title} p50",
            )  # fmt: skip
        axis.set_yscale("log")
        axis.set_xlabel("offered load (requests per second, open loop)")
        axis.set_ylabel("latency from intended send (ms)")
        axis.set_title(SCENARIOS[floor_key].method)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    env = result["environment"]
    figure.suptitle(
        f"Latency vs offered load, {env['cpu_count']} CPUs, commit {env['git_commit'][:8]}, "
        f"{result['created']}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
