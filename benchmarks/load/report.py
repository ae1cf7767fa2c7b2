"""The run's output: one JSON file (environment, settings, every phase, the summary against
the floor, the targets, the verdict against the smoke bounds and a baseline run), a Markdown
report of the same and one latency-versus-offered-load PNG per scenario (plot.py)."""

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

from benchmarks.floor_server import KINDS
from benchmarks.load import compare as baseline_comparison
from benchmarks.load import h2load, scenarios
from benchmarks.load.plan import CLOSED, NOT_SENT, OPEN
from benchmarks.load.scenarios import H2LOAD, PYTHON, SCENARIOS, Scenario

REPO_ROOT = Path(__file__).resolve().parents[2]
# 3: `verdict`, `comparison`, settings.scenarios; `smoke` (the bounds' verdict) in every run
# that measured the cache hit; open-loop records carry their measuring round (open_round).
SCHEMA_VERSION = 3
# An open-loop phase that answered fewer than this fraction of its offered rate is overloaded.
OVERLOAD_ACHIEVED = 0.95
# Open-loop sends this late (p99, us): every sending thread was waiting on slow answers, or
# the generator was short of CPU (the lag is counted in the latency either way).
LATE_SEND_US = 1_000.0


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


LATENCY = "latency"  # an h2load 1-in-flight record's shape


def h2load_record(result: Any, scenario: Scenario, machine_busy: float) -> dict[str, Any]:
    """A phase record (the Python generator's fields) from an h2load.H2loadResult."""
    seconds = result.elapsed_s or 0.0
    samples = {
        "rps": round(result.rps, 1),
        "count": result.samples,
        "p50_us": round(result.p50_ms * 1000, 1),
        "p90_us": round(result.p90_ms * 1000, 1),
        "p99_us": round(result.p99_ms * 1000, 1),
        "p99_9_us": round(result.p999_ms * 1000, 1),
        "max_us": round(result.max_ms * 1000, 1),
        "mean_us": round(result.mean_ms * 1000, 1),
    }
    errors = {
        name: count
        for name, count in (
            ("h2load:failed", result.failed),
            ("h2load:errored", result.errored),
            ("h2load:timeout", result.timeout),
            ("h2load:not HTTP 200", result.non_200),
            (f"{scenario.method}:answered without a message", result.short_answers),
        )
        if count
    }
    cpu = result.cpu_seconds
    loader = result.loader_cpu_us_per_rpc
    return {
        "phase": result.label,
        "target": result.url,
        "loader": H2LOAD,
        "shape": CLOSED if result.mode == h2load.SATURATION else LATENCY,
        "concurrency": result.connections * result.in_flight_per_connection,
        "connections": result.connections,
        "offered_rps": None,
        "seconds": round(seconds, 3),
        "warmup_requests": result.warmup_requests,
        "achieved_rps": round(result.rps, 1),
        "methods": {scenario.method: samples} if result.samples else {},
        "errors": errors,
        "error_fraction": round(result.not_ok / max(1, result.n), 5),
        "server_cpu_cores": round(cpu / seconds, 3) if cpu is not None and seconds else None,
        "server_cpu_us_per_rpc": _round(result.cpu_us_per_rpc),
        "server_cpu_split": [round(c, 3) for c in result.cpu_seconds_by_pid],
        "generator_cpu_cores": round(loader * result.n / 1e6 / seconds, 3)
        if loader is not None and seconds
        else None,
        "generator_cpu_us_per_rpc": _round(loader),
        "machine_busy_fraction": round(machine_busy, 3),
        "send_lag_p50_us": None,
        "send_lag_p99_us": None,
        "connections_per_worker": None,
        "notes": [],
        "h2load": {
            "processes": result.processes,
            "requests_done": result.n,
            "data_bytes": result.data_bytes,
            "expected_data_bytes": result.expected_data_bytes,
        },
    }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _find(
    records: list[dict[str, Any]],
    scenario: str,
    repeat: int,
    shape: str,
    *,
    loader: str | None = None,
    kind: str | None = None,
    fraction: float | None = None,
    rate: float | None = None,
) -> dict[str, Any] | None:
    for record in records:
        if (
            record["scenario"] == scenario
            and record["repeat"] == repeat
            and record["shape"] == shape
            and (loader is None or record["loader"] == loader)
            and (kind is None or record.get("floor_kind") == kind)
            and (fraction is None or record["load_fraction"] == fraction)
            and (
                rate is None or (record["load_fraction"] is None and record["offered_rps"] == rate)
            )
        ):
            return record
    return None


def best_floor(records: list[dict[str, Any]], floor: str, repeat: int) -> dict[str, Any] | None:
    """The floor kind's h2load saturation record with the higher throughput (the floor of
    that repeat), or None when the floor was not measured."""
    measured = [_find(records, floor, repeat, CLOSED, loader=H2LOAD, kind=kind) for kind in KINDS]
    present = [record for record in measured if record is not None]
    return max(present, key=lambda r: float(r["achieved_rps"])) if present else None


def overloaded(record: dict[str, Any]) -> bool:
    """An open-loop phase whose offered rate was not delivered: fewer RPCs answered than
    OVERLOAD_ACHIEVED of the rate, or RPCs never sent (the generator fell behind). Its
    latency shows the machine's overload, not the server's latency at that rate."""
    offered = record.get("offered_rps")
    if not offered:
        return False
    never_sent = any(key.endswith(f":{NOT_SENT}") for key in record["errors"])
    return never_sent or float(record["achieved_rps"]) < OVERLOAD_ACHIEVED * float(offered)


def _latency(record: dict[str, Any] | None, method: str, key: str) -> float | None:
    if record is None:
        return None
    value = record["methods"].get(method, {}).get(key)
    return None if value is None else float(value)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def _slice_ratio(
    mine: dict[str, Any] | None, theirs: dict[str, Any] | None, key: str
) -> float | None:
    """The median over slices of mine/theirs, slice by slice (the slices of a group are
    taken in turns, so slice i of each server saw about the same machine): robust to a
    burst of other load that hits one slice of one server."""
    if mine is None or theirs is None:
        return None
    pairs = [
        a / b
        for a, b in zip(mine.get(key) or [], theirs.get(key) or [], strict=False)
        if a is not None and b
    ]
    return round(statistics.median(pairs), 3) if pairs else None


def scenario_figures(
    records: list[dict[str, Any]],
    scenario: Scenario,
    repeat: int,
    fractions: tuple[float, ...],
    compare: float,
) -> dict[str, Any]:
    """One repeat's figures of a scenario against the better floor of that repeat."""
    floor = SCENARIOS[scenario.floor]
    best = best_floor(records, floor.key, repeat)
    kind = best["floor_kind"] if best else None
    figures: dict[str, Any] = {"loader": scenario.loader, "floor_kind": kind}
    for each in KINDS:
        measured = _find(records, floor.key, repeat, CLOSED, loader=H2LOAD, kind=each)
        if measured is not None:
            figures[f"floor_{each}_throughput_rps"] = measured["achieved_rps"]
            figures[f"floor_{each}_server_cpu_us_per_rpc"] = measured["server_cpu_us_per_rpc"]
    closed = _find(records, scenario.key, repeat, CLOSED, loader=scenario.loader)
    if scenario.loader == H2LOAD:
        floor_closed = best
    else:
        floor_closed = _find(records, floor.key, repeat, CLOSED, loader=PYTHON, kind=kind)
    if closed:
        figures.update(
            throughput_rps=float(closed["achieved_rps"]),
            server_cpu_us_per_rpc=closed["server_cpu_us_per_rpc"],
            generator_cpu_us_per_rpc=closed["generator_cpu_us_per_rpc"],
            decisions_per_second=round(float(closed["achieved_rps"]) * scenario.decisions),
            closed_p50_us=_latency(closed, scenario.method, "p50_us"),
            closed_p99_us=_latency(closed, scenario.method, "p99_us"),
        )
    if closed and floor_closed:
        floor_rps = float(floor_closed["achieved_rps"])
        figures.update(
            floor_throughput_rps=floor_rps,
            throughput_ratio=_ratio(float(closed["achieved_rps"]), floor_rps),
            floor_server_cpu_us_per_rpc=floor_closed["server_cpu_us_per_rpc"],
            server_cpu_ratio=_ratio(
                closed["server_cpu_us_per_rpc"], floor_closed["server_cpu_us_per_rpc"]
            ),
            floor_closed_p99_us=_latency(floor_closed, floor.method, "p99_us"),
            throughput_ratio_by_slice=_slice_ratio(closed, floor_closed, "slice_rps"),
        )
    single = _find(records, scenario.key, repeat, LATENCY)
    floor_single = _find(records, floor.key, repeat, LATENCY, kind=kind) if kind else None
    if single:
        for key in ("p50_us", "p99_us", "p99_9_us"):
            mine = _latency(single, scenario.method, key)
            theirs = _latency(floor_single, floor.method, key)
            figures[f"latency_{key}"] = mine
            figures[f"floor_latency_{key}"] = theirs
            figures[f"latency_{key.removesuffix('_us')}_ratio"] = _ratio(mine, theirs)
        figures["latency_server_cpu_us_per_rpc"] = single["server_cpu_us_per_rpc"]
        figures["latency_p99_ratio_by_slice"] = _slice_ratio(single, floor_single, "slice_p99_us")
    for fraction in fractions:
        opened = _find(records, scenario.key, repeat, OPEN, fraction=fraction)
        floor_opened = _find(records, floor.key, repeat, OPEN, fraction=fraction)
        if not (opened and floor_opened):
            continue
        tags = [f"{round(fraction * 100)}pct"] + (["compare"] if fraction == compare else [])
        # With the floor itself past its limit (with the generator beside it) the ratio
        # means nothing: it is left out (the latencies stay, marked).
        floor_over = overloaded(floor_opened)
        for tag in tags:
            for key in ("p50_us", "p99_us", "p99_9_us"):
                mine = _latency(opened, scenario.method, key)
                theirs = _latency(floor_opened, floor.method, key)
                figures[f"{key}_at_{tag}"] = mine
                figures[f"floor_{key}_at_{tag}"] = theirs
                figures[f"{key.removesuffix('_us')}_ratio_at_{tag}"] = (
                    None if floor_over else _ratio(mine, theirs)
                )
            figures[f"p99_ratio_by_slice_at_{tag}"] = (
                None if floor_over else _slice_ratio(opened, floor_opened, "slice_p99_us")
            )
            figures[f"overloaded_at_{tag}"] = overloaded(opened)
            figures[f"floor_overloaded_at_{tag}"] = floor_over
            figures[f"rate_rps_at_{tag}"] = opened["offered_rps"]
            figures[f"achieved_rps_at_{tag}"] = opened["achieved_rps"]
            figures[f"machine_busy_at_{tag}"] = opened["machine_busy_fraction"]
            figures[f"send_lag_p99_us_at_{tag}"] = opened["send_lag_p99_us"]
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
        figures[f"machine_busy_at_{tag}"] = fixed["machine_busy_fraction"] if fixed else None
        figures[f"send_lag_p99_us_at_{tag}"] = fixed["send_lag_p99_us"] if fixed else None
    return figures


def _median(values: list[Any]) -> Any:
    """The median of the numbers; of strings (the floor kind), the most common; of
    flags (overloaded), whether any is set."""
    flags = [v for v in values if isinstance(v, bool)]
    if flags:
        return any(flags)
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if numbers:
        return round(statistics.median(numbers), 3)
    strings = [v for v in values if isinstance(v, str)]
    if strings:
        return max(sorted(set(strings)), key=strings.count)
    return None


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
        if not any(run.get("throughput_rps") is not None for run in runs):
            continue
        keys = sorted({k for run in runs for k in run})
        summary[scenario.key] = {
            "title": scenario.title,
            "runs": runs,
            "median": {k: _median([run.get(k) for run in runs]) for k in keys},
        }
    return summary


def floors(records: list[dict[str, Any]], repeats: int) -> dict[str, Any]:
    """Both floor kinds per floor scenario and repeat (h2load), which was better, and the
    medians over the repeats."""
    result: dict[str, Any] = {}
    for key, scenario in SCENARIOS.items():
        if scenario.floor:
            continue
        runs = []
        for repeat in range(repeats):
            best = best_floor(records, key, repeat)
            if best is None:
                continue
            run: dict[str, Any] = {"better": best["floor_kind"]}
            for kind in KINDS:
                closed = _find(records, key, repeat, CLOSED, loader=H2LOAD, kind=kind)
                single = _find(records, key, repeat, LATENCY, kind=kind)
                run[kind] = {
                    "throughput_rps": closed["achieved_rps"] if closed else None,
                    "server_cpu_us_per_rpc": closed["server_cpu_us_per_rpc"] if closed else None,
                    "latency_p50_us": _latency(single, scenario.method, "p50_us"),
                    "latency_p99_us": _latency(single, scenario.method, "p99_us"),
                }
            runs.append(run)
        if not runs:
            continue
        median = {
            kind: {figure: _median([run[kind][figure] for run in runs]) for figure in runs[0][kind]}
            for kind in KINDS
        }
        counts = {kind: sum(run["better"] == kind for run in runs) for kind in KINDS}
        result[key] = {
            "title": scenario.title,
            "runs": runs,
            "median": median,
            "better": _median([run["better"] for run in runs]),
            "better_counts": counts,
        }
    return result


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


def h2load_version() -> str:
    try:
        found = h2load.find_h2load()
        output = subprocess.run(
            [found, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (h2load.H2loadMissing, OSError, subprocess.TimeoutExpired):
        return ""
    return output.strip().splitlines()[0] if output.strip() else ""


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


# -- files ----------------------------------------------------------------------------


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


def _fmt(value: Any, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}{suffix}"
    if isinstance(value, (int, float)):
        return f"{value:,.0f}{suffix}"
    return str(value)


def _ms(value: Any) -> str:
    """Microseconds as milliseconds, 2 decimals."""
    return "-" if value is None else f"{float(value) / 1000:.2f}"


def markdown(result: dict[str, Any], plots: list[Path]) -> str:
    env = result["environment"]
    settings = result["settings"]
    h2 = settings["h2load"]
    compare = settings["compare_fraction"]
    lines = [
        f"# Load benchmark, {result['created']}",
        "",
        f"`{result['command']}`: commit {env['git_commit'][:12]}"
        + (" (uncommitted changes)" if env["git_dirty"] else "")
        + f", {env['cpu_count']} CPUs ({env['cpu_model']}), Python {env['python']}, "
        f"grpcio {env['grpcio']}, protobuf {env['protobuf']}, {h2['version'] or 'h2load'}; "
        f"{settings['workers']} server workers; {settings['repeat']} repeat(s); took "
        f"{result['elapsed_seconds']:.0f} s.",
        "",
        f"- **h2load** (closed loop, one fixed request): saturation with "
        f"{h2['saturation_connections']} connections ({h2['saturation_connections_per_worker']}"
        f" per worker) x 1 RPC in flight, {h2['saturation_seconds']:g} s after "
        f"{h2['saturation_warmup_requests']} warm-up requests; latency with 1 connection x 1 "
        f"in flight, {h2['latency_seconds']:g} s; each server's time in {h2['slices']} slices "
        "taken in turns with the other servers of its group (order reversed every other "
        "slice), pooled. Answers checked with a real client first.",
        f"- **Python generator** ({settings['python_generators']} processes): open loop at "
        f"fixed arrival rates (fractions {settings['open_loop_fractions']} of the floor's h2load "
        "saturation, and fixed rates), latency from the intended send time; closed loop "
        f"({settings['python_closed_loop_in_flight']} in flight) where h2load cannot send the "
        f"workload; {settings['python_seconds_per_phase']:g} s per phase (open loop: in "
        f"{settings['open_loop_slices']} slices taken in turns, pooled), each slice after "
        f"{settings['python_warmup_seconds']:g} s warm-up.",
        "- **The floor**: empty handlers returning constant answers (same workers, options "
        "and admission bound, no interceptors), measured as both kinds (sync thread pool, "
        "grpc.aio on uvloop); the faster in each repeat is *the* floor. Ratios are to it; "
        "with several repeats each figure is the median of the per-repeat values.",
        "",
    ]
    lines += _verdict_lines(result)
    bounds = result.get("smoke")
    if bounds:
        lines += [
            f"## Smoke bounds: {'PASSED' if bounds['passed'] else '**FAILED**'}",
            "",
            "| check | bound | measured | passed | median of the slices' ratios |",
            "|---|---|---:|---|---:|",
        ]
        for check in bounds["checks"]:
            lines.append(
                f"| {check['check']} | {check['bound']} | {_fmt(check['measured'], 3)} | "
                f"{'yes' if check['passed'] else '**no**'} | "
                f"{_fmt(check.get('median_of_slice_ratios'), 3)} |"
            )
        lines += [f"- {failure}" for failure in bounds["failures"] if "did not run" in failure]
        lines += ["", f"Bounds: {result['smoke_bounds']['calibration']}", ""]
    if result.get("comparison"):
        lines += baseline_comparison.markdown_lines(result["comparison"])
    if result["floors"]:
        lines += [
            "## Floors (h2load)",
            "",
            "| floor | sync rps | sync CPU µs/RPC | sync 1-in-flight p99 ms | aio rps | "
            "aio CPU µs/RPC | aio 1-in-flight p99 ms | the floor (repeats won) |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for entry in result["floors"].values():
            sync, aio = entry["median"]["sync"], entry["median"]["aio"]
            won = ", ".join(f"{k} {v}" for k, v in entry["better_counts"].items())
            lines.append(
                f"| {entry['title']} | {_fmt(sync['throughput_rps'])} | "
                f"{_fmt(sync['server_cpu_us_per_rpc'])} | {_ms(sync['latency_p99_us'])} | "
                f"{_fmt(aio['throughput_rps'])} | {_fmt(aio['server_cpu_us_per_rpc'])} | "
                f"{_ms(aio['latency_p99_us'])} | **{entry['better']}** ({won}) |"
            )
        lines.append("")
    lines += [
        "## Scenarios against the floor",
        "",
        "| scenario | loader | rps | / floor | floor rps (kind) | server CPU µs/RPC (floor) | "
        "1 in flight p50 / p99 ms (floor p99) | p99 / floor | "
        f"open loop at {compare:.0%}: rps | p99 ms (floor) | p99 / floor |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, entry in result["summary"].items():
        m = entry["median"]
        rps = _fmt(m.get("throughput_rps"))
        if SCENARIOS[key].decisions > 1:
            rps += f" = {_fmt(m.get('decisions_per_second'))} decisions/s"
        over = ""
        if m.get("floor_overloaded_at_compare"):
            over = " floor overloaded"
        elif m.get("overloaded_at_compare"):
            over = " overloaded"
        lines.append(
            f"| {entry['title']} | {m.get('loader') or '-'} | {rps} | "
            f"{_fmt(m.get('throughput_ratio'), 2)} | {_fmt(m.get('floor_throughput_rps'))} "
            f"({m.get('floor_kind') or '-'}) | {_fmt(m.get('server_cpu_us_per_rpc'))} "
            f"({_fmt(m.get('floor_server_cpu_us_per_rpc'))}) | "
            f"{_ms(m.get('latency_p50_us'))} / {_ms(m.get('latency_p99_us'))} "
            f"({_ms(m.get('floor_latency_p99_us'))}) | {_fmt(m.get('latency_p99_ratio'), 2)} | "
            f"{_fmt(m.get('rate_rps_at_compare'))} | {_ms(m.get('p99_us_at_compare'))} "
            f"({_ms(m.get('floor_p99_us_at_compare'))}) | "
            f"{_fmt(m.get('p99_ratio_at_compare'), 2)}{over} |"
        )
    if result["targets"]:
        lines += ["", "## Targets (issue 10)", "", "| target | bound | measured | met |"]
        lines.append("|---|---|---:|---|")
        for t in result["targets"]:
            met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
            lines.append(f"| {t['target']} | {t['bound']} | {_fmt(t['measured'], 2)} | {met} |")
    lines += [
        "",
        "Overloaded: the open-loop rate was not delivered (fewer than "
        f"{OVERLOAD_ACHIEVED:.0%} of it answered, or RPCs never sent); when the floor "
        "was, the ratio is left out. Sends late: the Python generator sent its RPCs late "
        f"(p99 lag over {LATE_SEND_US / 1000:g} ms; the lag counts in the latency): all its "
        "sending threads were waiting on slow answers, or the machine was short of CPU "
        "(see machine busy).",
    ]
    lines += _open_loop_table(result)
    if result["skipped"]:
        lines += [""] + [f"Skipped {k}: {v}." for k, v in result["skipped"].items()]
    lines += [
        "",
        "## Every phase",
        "",
        "| # | phase | in flight | offered rps | achieved rps | p50 | p90 | p99 | p99.9 | max | "
        "server CPU µs/RPC | loader CPU µs/RPC | machine busy | send lag p99 | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["phases"]:
        method = SCENARIOS[r["scenario"]].method
        lat = r["methods"].get(method, {})
        percentiles = " | ".join(
            _fmt(lat.get(k)) for k in ("p50_us", "p90_us", "p99_us", "p99_9_us", "max_us")
        )
        lines.append(
            f"| {r['repeat']} | {r['phase']} | {_fmt(r['concurrency'])} | "
            f"{_fmt(r['offered_rps'])} | {_fmt(r['achieved_rps'])} | {percentiles} | "
            f"{_fmt(r['server_cpu_us_per_rpc'])} | {_fmt(r['generator_cpu_us_per_rpc'])} | "
            f"{r['machine_busy_fraction']:.0%} | {_fmt(r['send_lag_p99_us'])} | "
            f"{', '.join(f'{k} {v}' for k, v in r['errors'].items()) or '-'} |"
        )
    lines += ["", "Latencies in µs unless marked ms."]
    if plots:
        lines += ["", "## Latency versus offered load", ""]
        lines += [f"![{path.stem}: latency versus offered load]({path.name})" for path in plots]
    return "\n".join(lines) + "\n"


def _verdict_lines(result: dict[str, Any]) -> list[str]:
    """The run's verdict first: what was checked, whether it decides the exit code."""
    verdict = result.get("verdict")
    if not verdict or verdict["passed"] is None:
        return []
    lines = [f"## Verdict: {'PASSED' if verdict['passed'] else '**FAILED**'}", ""]
    for part in verdict["parts"]:
        state = "passed" if part["passed"] else "**failed**"
        role = (
            "decides the exit code"
            if part["enforced"]
            else "recorded only (--check or --smoke makes it decide the exit code)"
        )
        lines.append(f"- {part['name']}: {state}; {role}")
    lines += [f"- {failure}" for failure in verdict["failures"]]
    if verdict.get("targets_met"):
        lines.append(f"- targets of issue 10 met: {verdict['targets_met']} (reported, not checked)")
    return [*lines, ""]


def _open_loop_table(result: dict[str, Any]) -> list[str]:
    """Every open-loop point of every scenario (medians), with its floor's."""
    rows = []
    for entry in result["summary"].values():
        m = entry["median"]
        tags = sorted(
            (t.removeprefix("rate_rps_at_") for t in m if t.startswith("rate_rps_at_")),
            key=lambda t: m[f"rate_rps_at_{t}"] or 0,
        )
        tags = [t for t in tags if t != "compare"]
        tags += sorted(
            (t.removeprefix("p99_us_at_") for t in m
             if t.startswith("p99_us_at_") and t.endswith("rps")),
            key=lambda t: float(t.removesuffix("rps")),
        )  # fmt: skip
        for tag in tags:
            rate = m.get(f"rate_rps_at_{tag}") or float(tag.removesuffix("rps") or 0)
            where = tag.replace("pct", "% of floor saturation") if "pct" in tag else "fixed rate"
            note = (
                "floor overloaded" if m.get(f"floor_overloaded_at_{tag}")
                else "overloaded" if m.get(f"overloaded_at_{tag}") else ""
            )  # fmt: skip
            lag = m.get(f"send_lag_p99_us_at_{tag}")
            if lag is not None and lag > LATE_SEND_US:
                note = ", ".join(filter(None, [note, f"sends late (lag p99 {_ms(lag)} ms)"]))
            rows.append(
                f"| {entry['title']} | {_fmt(rate)} ({where}) | {_ms(m.get(f'p50_us_at_{tag}'))} "
                f"| {_ms(m.get(f'p99_us_at_{tag}'))} ({_ms(m.get(f'floor_p99_us_at_{tag}'))}) | "
                f"{_fmt(m.get(f'p99_ratio_at_{tag}'), 2)} | "
                f"{_fmt(m.get(f'machine_busy_at_{tag}'), 2)} | {note or '-'} |"
            )
    if not rows:
        return []
    return [
        "",
        "## Open loop (Python generator, latency from the intended send time)",
        "",
        "| scenario | offered rps | p50 ms | p99 ms (floor) | p99 / floor | machine busy | |",
        "|---|---:|---:|---:|---:|---:|---|",
        *rows,
    ]
