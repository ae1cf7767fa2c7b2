"""The Markdown report of a load run: settings, the summary against the floor, the targets,
the verdicts and the open-loop table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.load import compare as baseline_comparison
from benchmarks.load.figures import OVERLOAD_ACHIEVED
from benchmarks.load.scenarios import SCENARIOS

# Open-loop sends this late (p99, us): every sending thread was waiting on slow answers, or
# the generator was short of CPU (the lag is counted in the latency either way).
LATE_SEND_US = 1_000.0


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
    lines = _header_lines(result)
    lines += _verdict_lines(result)
    lines += _smoke_lines(result)
    if result.get("comparison"):
        lines += baseline_comparison.markdown_lines(result["comparison"])
    lines += _floor_lines(result)
    lines += _scenario_lines(result)
    lines += _target_lines(result)
    lines += _legend_lines()
    lines += _open_loop_table(result)
    if result["skipped"]:
        lines += [""] + [f"Skipped {k}: {v}." for k, v in result["skipped"].items()]
    lines += _phase_lines(result)
    if plots:
        lines += ["", "## Latency versus offered load", ""]
        lines += [f"![{path.stem}: latency versus offered load]({path.name})" for path in plots]
    return "\n".join(lines) + "\n"


def _header_lines(result: dict[str, Any]) -> list[str]:
    """The title, where and how it ran, and how each loader measures."""
    env = result["environment"]
    settings = result["settings"]
    h2 = settings["h2load"]
    return [
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


def _smoke_lines(result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
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
    return lines


def _floor_lines(result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
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
    return lines


def _scenario_lines(result: dict[str, Any]) -> list[str]:
    compare = result["settings"]["compare_fraction"]
    lines = [
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
    return lines


def _target_lines(result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if result["targets"]:
        lines += ["", "## Targets (issue 10)", "", "| target | bound | measured | met |"]
        lines.append("|---|---|---:|---|")
        for t in result["targets"]:
            met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
            lines.append(f"| {t['target']} | {t['bound']} | {_fmt(t['measured'], 2)} | {met} |")
    return lines


def _legend_lines() -> list[str]:
    return [
        "",
        "Overloaded: the open-loop rate was not delivered (fewer than "
        f"{OVERLOAD_ACHIEVED:.0%} of it answered, or RPCs never sent); when the floor "
        "was, the ratio is left out. Sends late: the Python generator sent its RPCs late "
        f"(p99 lag over {LATE_SEND_US / 1000:g} ms; the lag counts in the latency): all its "
        "sending threads were waiting on slow answers, or the machine was short of CPU "
        "(see machine busy).",
    ]


def _phase_lines(result: dict[str, Any]) -> list[str]:
    lines = [
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
    return lines


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
