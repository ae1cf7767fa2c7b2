"""A run against a baseline run: per scenario, each ratio to the floor of the run beside
the baseline's, and whether it got worse past a threshold.

    python -m benchmarks.load --smoke --compare benchmarks/baselines/smoke.json
    python -m benchmarks.load.compare RUN.json BASELINE.json   # two finished runs

Only ratios to the floor measured in the same run are compared, never absolute rates or
latencies: those follow the machine and its other load, the ratios much less (see
scenarios.py for how noisy they still are on a shared 2-core machine). A scenario of the
baseline that the run selected but has no figures for (it was skipped or failed) fails
the comparison; one the run did not select is reported and not compared.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.load import scenarios

HIGHER = "higher"  # a higher value is better
LOWER = "lower"

THROUGHPUT = "throughput"  # the threshold class of a figure
LATENCY = "latency"

# Row statuses.
OK = "ok"
WORSE = "worse past the threshold"
NOT_COMPARED = "not compared"
MISSING = "missing from the run"
NOT_SELECTED = "not selected in the run"
NO_BASELINE = "no baseline"

OPEN_LOOP_RATIO = re.compile(r"^p99_ratio_at_(\d+)pct$")


@dataclass(frozen=True, slots=True)
class Figure:
    key: str  # in a scenario's summary medians
    label: str
    better: str  # HIGHER or LOWER
    kind: str  # THROUGHPUT or LATENCY: which threshold applies


# The ratios compared, besides the open-loop p99 ratios found in both runs.
FIGURES = (
    Figure("throughput_ratio", "throughput / floor's (closed loop)", HIGHER, THROUGHPUT),
    Figure("latency_p99_ratio", "p99 / floor's, 1 RPC in flight", LOWER, LATENCY),
)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """How much worse a ratio may get than the baseline's before the comparison fails,
    as a fraction of the baseline's value (0.30: 30% worse)."""

    throughput: float = scenarios.COMPARE_MAX_THROUGHPUT_WORSENING
    latency: float = scenarios.COMPARE_MAX_LATENCY_WORSENING

    def of(self, figure: Figure) -> float:
        return self.throughput if figure.kind == THROUGHPUT else self.latency


def _open_loop_figures(*medians: dict[str, Any]) -> list[Figure]:
    """The open-loop p99 ratios (one per fraction of the floor's saturation) in any of
    the runs, lowest fraction first."""
    percents = sorted(
        {
            int(m.group(1))
            for medians_ in medians
            for k in medians_
            if (m := OPEN_LOOP_RATIO.match(k))
        }
    )
    return [
        Figure(
            f"p99_ratio_at_{pct}pct",
            f"p99 / floor's, open loop at {pct}% of floor saturation",
            LOWER,
            LATENCY,
        )
        for pct in percents
    ]


def worsening(figure: Figure, baseline: float, current: float) -> float:
    """How much worse `current` is than `baseline`, as a fraction of the baseline
    (negative: better). For a higher-is-better ratio, 0.5 -> 0.4 is 0.2 worse."""
    change = current / baseline - 1.0
    return -change if figure.better == HIGHER else change


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _selected(run: dict[str, Any]) -> set[str]:
    """The scenarios the run was asked to measure (older runs do not record them: then
    those with figures or a reason for skipping)."""
    chosen = run.get("settings", {}).get("scenarios")
    if chosen is not None:
        return set(chosen)
    return set(run.get("summary", {})) | set(run.get("skipped", {}))


def compare(
    run: dict[str, Any],
    baseline: dict[str, Any],
    thresholds: Thresholds | None = None,
    baseline_name: str = "",
) -> dict[str, Any]:
    """The comparison of a run's result (report.build) with a baseline run's: one row
    per scenario and ratio, `passed`, and `failures` in words."""
    thresholds = thresholds or Thresholds()
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    notes: list[str] = []
    summary = run.get("summary", {})
    base_summary = baseline.get("summary", {})
    selected = _selected(run)
    for setting in ("workers", "smoke"):
        mine = run.get("settings", {}).get(setting)
        theirs = baseline.get("settings", {}).get(setting)
        if mine != theirs:
            notes.append(f"{setting} differ: {mine} in the run, {theirs} in the baseline")
    for key in [*base_summary, *(k for k in summary if k not in base_summary)]:
        if key not in base_summary:
            rows.append(_row(key, None, NO_BASELINE, passed=True))
            continue
        if key not in summary:
            if key in selected:
                why = run.get("skipped", {}).get(key, "no figures")
                rows.append(_row(key, None, MISSING, passed=False, note=why))
                failures.append(f"{key}: in the baseline but missing from the run ({why})")
            else:
                rows.append(_row(key, None, NOT_SELECTED, passed=True))
            continue
        mine, theirs = summary[key]["median"], base_summary[key]["median"]
        for figure in (*FIGURES, *_open_loop_figures(mine, theirs)):
            current, base = _number(mine.get(figure.key)), _number(theirs.get(figure.key))
            if current is None or base is None or base <= 0:
                side = "the run" if current is None else "the baseline"
                rows.append(
                    _row(key, figure, NOT_COMPARED, passed=True, baseline=base, current=current,
                         note=f"not measured (or overloaded) in {side}")
                )  # fmt: skip
                continue
            worse = worsening(figure, base, current)
            limit = thresholds.of(figure)
            passed = worse <= limit
            rows.append(
                _row(key, figure, OK if passed else WORSE, passed=passed, baseline=base,
                     current=current, delta=round(current / base - 1.0, 4),
                     worsening=round(worse, 4), threshold=limit)
            )  # fmt: skip
            if not passed:
                failures.append(
                    f"{key}: {figure.label} {current:.3f} against the baseline's {base:.3f} "
                    f"is {worse:.0%} worse (threshold {limit:.0%})"
                )
    environment = baseline.get("environment", {})
    return {
        "baseline": baseline_name,
        "baseline_created": baseline.get("created"),
        "baseline_commit": environment.get("git_commit", ""),
        "thresholds": {"throughput": thresholds.throughput, "latency": thresholds.latency},
        "rows": rows,
        "notes": notes,
        "passed": not failures,
        "failures": failures,
    }


def _row(
    scenario: str,
    figure: Figure | None,
    status: str,
    *,
    passed: bool,
    baseline: float | None = None,
    current: float | None = None,
    delta: float | None = None,
    worsening: float | None = None,
    threshold: float | None = None,
    note: str = "",
) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "figure": figure.key if figure else None,
        "label": figure.label if figure else None,
        "better": figure.better if figure else None,
        "baseline": baseline,
        "current": current,
        "delta": delta,
        "worsening": worsening,
        "threshold": threshold,
        "status": status,
        "passed": passed,
        "note": note,
    }


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _percent(value: float | None, sign: bool = True) -> str:
    return "-" if value is None else f"{value:+.1%}" if sign else f"{value:.0%}"


def header(comparison: dict[str, Any]) -> str:
    thresholds = comparison["thresholds"]
    return (
        f"against the baseline {comparison['baseline'] or '(unnamed)'} (commit "
        f"{(comparison['baseline_commit'] or '?')[:8]}, {comparison['baseline_created']}); "
        f"fails when a throughput ratio is more than {thresholds['throughput']:.0%} worse, "
        f"a p99 ratio more than {thresholds['latency']:.0%} worse"
    )


def text_table(comparison: dict[str, Any]) -> str:
    """The comparison for a terminal: one line per scenario and ratio."""
    lines = [f"Ratios to the floor {header(comparison)}:"]
    lines.append(
        f"  {'scenario':<18} {'ratio':<52} {'baseline':>8} {'run':>8} {'delta':>8} {'limit':>6}  "
        "verdict"
    )
    for row in comparison["rows"]:
        limit = row["threshold"]
        worse_sign = "-" if row["better"] == HIGHER else "+"
        lines.append(
            f"  {row['scenario']:<18} {row['label'] or '':<52} {_value(row['baseline']):>8} "
            f"{_value(row['current']):>8} {_percent(row['delta']):>8} "
            f"{'-' if limit is None else worse_sign + _percent(limit, sign=False):>6}  "
            f"{row['status']}" + (f" ({row['note']})" if row["note"] else "")
        )
    lines += [f"  note: {note}" for note in comparison["notes"]]
    lines.append(f"  comparison: {'PASSED' if comparison['passed'] else 'FAILED'}")
    return "\n".join(lines)


def markdown_lines(comparison: dict[str, Any]) -> list[str]:
    verdict = "PASSED" if comparison["passed"] else "**FAILED**"
    lines = [
        f"## Against the baseline: {verdict}",
        "",
        f"Ratios to the floor {header(comparison)}. Delta: the run's ratio over the "
        "baseline's, minus 1; limit: the change past which it fails.",
        "",
        "| scenario | ratio | baseline | run | delta | limit | verdict |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in comparison["rows"]:
        limit = row["threshold"]
        worse_sign = "-" if row["better"] == HIGHER else "+"
        status = row["status"] if row["passed"] else f"**{row['status']}**"
        lines.append(
            f"| {row['scenario']} | {row['label'] or '-'} | {_value(row['baseline'])} | "
            f"{_value(row['current'])} | {_percent(row['delta'])} | "
            f"{'-' if limit is None else worse_sign + _percent(limit, sign=False)} | {status}"
            + (f" ({row['note']})" if row["note"] else "")
            + " |"
        )
    lines += [""] + [f"- {note}" for note in comparison["notes"]]
    return [*lines, ""] if comparison["notes"] else lines


def load(path: Path) -> dict[str, Any]:
    """A run's JSON (report.write); SystemExit with a readable message otherwise."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"cannot read the benchmark run {path}: {error}") from error
    if not isinstance(data, dict) or "summary" not in data:
        raise SystemExit(f"{path} is not a run of python -m benchmarks.load (no summary)")
    return data


def add_threshold_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--compare-threshold",
        type=float,
        default=scenarios.COMPARE_MAX_THROUGHPUT_WORSENING,
        metavar="FRACTION",
        help="--compare: fail when a throughput ratio is this much worse than the "
        "baseline's (default %(default)s: 30%% lower)",
    )
    parser.add_argument(
        "--compare-latency-threshold",
        type=float,
        default=scenarios.COMPARE_MAX_LATENCY_WORSENING,
        metavar="FRACTION",
        help="--compare: fail when a p99 ratio is this much worse than the baseline's "
        "(default %(default)s: 4 times the baseline's ratio)",
    )


def thresholds_from(args: argparse.Namespace) -> Thresholds:
    for name in ("compare_threshold", "compare_latency_threshold"):
        if getattr(args, name) < 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be 0 or more")
    return Thresholds(args.compare_threshold, args.compare_latency_threshold)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load.compare",
        description="Compare a finished load run's ratios to the floor with a baseline run's; "
        "exit 1 past the thresholds.",
    )
    parser.add_argument("run", type=Path, help="the run's JSON (benchmarks/results/*.json)")
    parser.add_argument("baseline", type=Path, help="the baseline run's JSON")
    add_threshold_arguments(parser)
    args = parser.parse_args(argv)
    comparison = compare(
        load(args.run), load(args.baseline), thresholds_from(args), str(args.baseline)
    )
    print(text_table(comparison))
    for failure in comparison["failures"]:
        print(f"BENCHMARK REGRESSION against the baseline: {failure}", file=sys.stderr)
    return 0 if comparison["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
