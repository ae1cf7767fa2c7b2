"""The figures of a load run: its records (one per measured phase) reduced to each
scenario's figures against its empty-handler floor, their medians over the repeats, and the
floors' own figures."""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.floor_server import KINDS
from benchmarks.load import h2load
from benchmarks.load.plan import CLOSED, NOT_SENT, OPEN
from benchmarks.load.scenarios import H2LOAD, PYTHON, SCENARIOS, Scenario

# An open-loop phase that answered fewer than this fraction of its offered rate is overloaded.
OVERLOAD_ACHIEVED = 0.95
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
    _floor_kind_figures(figures, records, floor, repeat)
    _closed_loop_figures(figures, records, scenario, floor, repeat, best, kind)
    _latency_figures(figures, records, scenario, floor, repeat, kind)
    for fraction in fractions:
        _open_loop_figures(figures, records, scenario, floor, repeat, fraction, compare)
    _fixed_rate_figures(figures, records, scenario, floor, repeat)
    return figures


def _floor_kind_figures(
    figures: dict[str, Any], records: list[dict[str, Any]], floor: Scenario, repeat: int
) -> None:
    """Each floor kind's h2load saturation."""
    for each in KINDS:
        measured = _find(records, floor.key, repeat, CLOSED, loader=H2LOAD, kind=each)
        if measured is not None:
            figures[f"floor_{each}_throughput_rps"] = measured["achieved_rps"]
            figures[f"floor_{each}_server_cpu_us_per_rpc"] = measured["server_cpu_us_per_rpc"]


def _closed_loop_figures(
    figures: dict[str, Any],
    records: list[dict[str, Any]],
    scenario: Scenario,
    floor: Scenario,
    repeat: int,
    best: dict[str, Any] | None,
    kind: str | None,
) -> None:
    """Saturation (closed loop) against the floor's."""
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


def _latency_figures(
    figures: dict[str, Any],
    records: list[dict[str, Any]],
    scenario: Scenario,
    floor: Scenario,
    repeat: int,
    kind: str | None,
) -> None:
    """1 RPC in flight against the floor's."""
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


def _open_loop_figures(
    figures: dict[str, Any],
    records: list[dict[str, Any]],
    scenario: Scenario,
    floor: Scenario,
    repeat: int,
    fraction: float,
    compare: float,
) -> None:
    """The open loop at a fraction of the floor's saturation, against the floor's."""
    opened = _find(records, scenario.key, repeat, OPEN, fraction=fraction)
    floor_opened = _find(records, floor.key, repeat, OPEN, fraction=fraction)
    if not (opened and floor_opened):
        return
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


def _fixed_rate_figures(
    figures: dict[str, Any],
    records: list[dict[str, Any]],
    scenario: Scenario,
    floor: Scenario,
    repeat: int,
) -> None:
    """The open loop at the scenario's fixed rates."""
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
