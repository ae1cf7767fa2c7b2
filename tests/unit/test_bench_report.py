"""The load benchmark's reports (benchmarks/load: report.py, compare.py, plot.py) from
synthetic phase records: the verdict and bounds in the JSON and Markdown, the comparison
with a baseline run, and one legible plot per scenario. No load is run."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

import benchmarks.load.__main__ as load_tool
from benchmarks.load import arguments, compare, figures, report, scenarios
from benchmarks.load.plan import CLOSED, OPEN
from benchmarks.load.scenarios import SCENARIOS

FLOOR_RPS = 6_000.0
FLOOR_P99_US = 1_000.0


def _methods(scenario: str, p99_us: float) -> dict[str, Any]:
    return {
        SCENARIOS[scenario].method: {
            "p50_us": round(p99_us / 3, 1),
            "p99_us": p99_us,
            "p99_9_us": p99_us * 2,
        }
    }


def _record(
    scenario: str, shape: str, rps: float, p99_us: float, kind: str | None, repeat: int
) -> dict[str, Any]:
    return {
        "phase": f"{scenario}{f' [{kind}]' if kind else ''} {shape}",
        "scenario": scenario,
        "server": scenario,
        "floor_kind": kind,
        "repeat": repeat,
        "loader": "h2load",
        "shape": shape,
        "concurrency": 16,
        "offered_rps": None,
        "load_fraction": None,
        "achieved_rps": rps,
        "methods": _methods(scenario, p99_us),
        "errors": {},
        "error_fraction": 0.0,
        "server_cpu_us_per_rpc": 250.0,
        "generator_cpu_us_per_rpc": 40.0,
        "machine_busy_fraction": 0.9,
        "send_lag_p99_us": None,
        "slice_rps": [rps, rps],
        "slice_p99_us": [p99_us, p99_us],
    }


def _h2load(
    scenario: str, rps: float, latency_p99_us: float, kind: str | None = None, repeat: int = 0
) -> list[dict[str, Any]]:
    """An h2load saturation record and a 1-in-flight latency record."""
    return [
        _record(scenario, CLOSED, rps, latency_p99_us * 10, kind, repeat),
        _record(scenario, figures.LATENCY, 2_000.0, latency_p99_us, kind, repeat),
    ]


def _open(
    scenario: str,
    rate: float,
    p99_us: float,
    round_id: int,
    *,
    fraction: float | None,
    kind: str | None = None,
    repeat: int = 0,
    achieved: float | None = None,
) -> dict[str, Any]:
    record = _record(scenario, OPEN, achieved or rate, p99_us, kind, repeat)
    record.update(
        loader="python",
        offered_rps=rate,
        load_fraction=fraction,
        open_round=round_id,
        send_lag_p99_us=100.0,
        slice_p99_us=[p99_us],
    )
    return record


def _floor_group(floor: str, repeat: int = 0) -> list[dict[str, Any]]:
    return [
        *_h2load(floor, FLOOR_RPS, FLOOR_P99_US, "sync", repeat),
        *_h2load(floor, FLOOR_RPS * 0.8, FLOOR_P99_US, "aio", repeat),
    ]


def smoke_records(
    throughput_ratio: float = 0.7, latency_ratio: float = 1.3, open_ratio: float = 2.0
) -> list[dict[str, Any]]:
    rate = FLOOR_RPS * scenarios.SMOKE_COMPARE_FRACTION
    return [
        *_floor_group("floor_get"),
        *_h2load("get_hit", FLOOR_RPS * throughput_ratio, FLOOR_P99_US * latency_ratio),
        _open("floor_get", rate, 4_000.0, 1, fraction=0.25, kind="sync"),
        _open("get_hit", rate, 4_000.0 * open_ratio, 1, fraction=0.25),
    ]


def full_records(repeats: int = 1) -> list[dict[str, Any]]:
    """get_hit at 25% and 55% of the floor's saturation (the 55% point saturated), the
    SQLite miss at 500 rps, and a floor round at 20 rps that belongs to no selected
    scenario (the Spanner group's)."""
    records = []
    for repeat in range(repeats):
        base = repeat * 10
        records += [
            *_floor_group("floor_get", repeat),
            *_h2load("get_hit", FLOOR_RPS * 0.75, FLOOR_P99_US * 1.2, repeat=repeat),
            *_h2load("get_miss_sqlite", FLOOR_RPS * 0.4, FLOOR_P99_US * 2, repeat=repeat),
        ]
        for round_id, fraction in ((base + 1, 0.25), (base + 2, 0.55)):
            rate = FLOOR_RPS * fraction
            saturated = rate * 0.7 if fraction == 0.55 else None
            records += [
                _open("floor_get", rate, 3_000.0, round_id, fraction=fraction, kind="sync",
                      repeat=repeat),
                _open("get_hit", rate, 5_000.0, round_id, fraction=fraction, repeat=repeat,
                      achieved=saturated),
            ]  # fmt: skip
        records += [
            _open("floor_get", 500.0, 1_500.0, base + 3, fraction=None, kind="sync", repeat=repeat),
            _open("get_miss_sqlite", 500.0, 2_500.0, base + 3, fraction=None, repeat=repeat),
            _open("floor_get", 20.0, 900.0, base + 4, fraction=None, kind="sync", repeat=repeat),
        ]
    return records


def build(
    argv: list[str], records: list[dict[str, Any]], baseline: dict[str, Any] | None = None
) -> dict[str, Any]:
    """report.build with the load tool's own argument parsing, as its main does."""
    args = arguments.parse_arguments(argv)
    selected = arguments.selected_scenarios(args)
    return report.build(records, selected, {}, args, 1.0, baseline)


def written(result: dict[str, Any], folder: Path) -> tuple[dict[str, Any], str]:
    paths = report.write(result, folder, smoke=result["settings"]["smoke"])
    return json.loads(paths.json.read_text()), paths.markdown.read_text()


# -- the verdict and its bounds, in the JSON and the Markdown --------------------------


def test_a_passing_smoke_writes_its_verdict_and_bounds_to_json_and_markdown(
    tmp_path: Path,
) -> None:
    data, text = written(build(["--smoke"], smoke_records()), tmp_path)

    assert data["verdict"]["passed"] is True
    assert data["verdict"]["exit_code"] == 0
    assert data["verdict"]["parts"][0]["name"] == "smoke bounds"
    assert data["verdict"]["parts"][0]["enforced"] is True
    checks = {c["figure"]: c for c in data["smoke"]["checks"]}
    assert checks["throughput_ratio"]["bound"] == f">= {scenarios.SMOKE_MIN_THROUGHPUT_RATIO:g}"
    assert checks["throughput_ratio"]["measured"] == pytest.approx(0.7)
    assert checks["latency_p99_ratio"]["bound"] == f"<= {scenarios.SMOKE_MAX_LATENCY_P99_RATIO:g}"
    assert checks["p99_ratio_at_25pct"]["measured"] == pytest.approx(2.0)
    assert data["smoke_bounds"]["max_p99_ratio_at_compare"] == scenarios.SMOKE_MAX_P99_RATIO

    assert "## Verdict: PASSED" in text
    assert "- smoke bounds: passed; decides the exit code" in text
    assert "## Smoke bounds: PASSED" in text
    for check in data["smoke"]["checks"]:
        assert f"| {check['check']} | {check['bound']} |" in text


def test_a_smoke_past_a_bound_fails_in_json_and_markdown(tmp_path: Path) -> None:
    data, text = written(build(["--smoke"], smoke_records(throughput_ratio=0.3)), tmp_path)

    assert data["verdict"]["passed"] is False
    assert data["verdict"]["exit_code"] == 1
    assert any("0.3 is not >= 0.5" in failure for failure in data["verdict"]["failures"])
    assert "## Verdict: **FAILED**" in text
    assert "## Smoke bounds: **FAILED**" in text
    assert "0.3 is not >= 0.5" in text


def test_a_full_run_records_the_bounds_verdict_without_enforcing_it(tmp_path: Path) -> None:
    records = full_records()
    for record in records:  # the cache hit far below the floor
        if record["scenario"] == "get_hit" and record["shape"] == CLOSED:
            record["achieved_rps"] = FLOOR_RPS * 0.2
    data, text = written(build(["--scenarios", "get_hit,get_miss_sqlite"], records), tmp_path)

    assert data["smoke"]["passed"] is False
    assert data["verdict"]["passed"] is False
    assert data["verdict"]["exit_code"] == 0
    assert data["verdict"]["targets_met"] is not None
    assert "recorded only (--check or --smoke makes it decide the exit code)" in text


# -- the comparison with a baseline run ------------------------------------------------


def test_a_run_close_to_its_baseline_passes_with_the_deltas_in_json_and_markdown(
    tmp_path: Path,
) -> None:
    baseline = build(["--smoke"], smoke_records(throughput_ratio=0.70, open_ratio=2.0))
    run = build(["--smoke"], smoke_records(throughput_ratio=0.63, open_ratio=3.0), baseline)
    data, text = written(run, tmp_path)

    comparison = data["comparison"]
    assert comparison["passed"] is True
    rows = {(r["scenario"], r["figure"]): r for r in comparison["rows"]}
    throughput = rows[("get_hit", "throughput_ratio")]
    assert throughput["baseline"] == pytest.approx(0.70)
    assert throughput["current"] == pytest.approx(0.63)
    assert throughput["delta"] == pytest.approx(-0.10)
    assert throughput["status"] == compare.OK
    assert rows[("get_hit", "p99_ratio_at_25pct")]["delta"] == pytest.approx(0.5)
    assert data["verdict"]["exit_code"] == 0
    assert "## Against the baseline: PASSED" in text
    row = "| get_hit | throughput / floor's (closed loop) | 0.700 | 0.630 | -10.0% | -30% | ok |"
    assert row in text


def test_a_ratio_worse_than_the_threshold_fails_the_comparison_and_the_run() -> None:
    baseline = build(["--smoke"], smoke_records(throughput_ratio=0.80, latency_ratio=0.8))
    run = build(["--smoke"], smoke_records(throughput_ratio=0.52, latency_ratio=3.4), baseline)

    comparison = run["comparison"]
    assert comparison["passed"] is False
    failed = {r["figure"] for r in comparison["rows"] if not r["passed"]}
    assert failed == {"throughput_ratio", "latency_p99_ratio"}
    assert any("35% worse (threshold 30%)" in f for f in comparison["failures"])
    assert run["smoke"]["passed"] is True  # within the bounds, yet worse than the baseline
    assert run["verdict"]["passed"] is False
    assert run["verdict"]["exit_code"] == 1


def test_the_thresholds_are_configurable() -> None:
    baseline = build(["--smoke"], smoke_records(throughput_ratio=0.80))
    run = build(["--smoke"], smoke_records(throughput_ratio=0.52))

    assert not compare.compare(run, baseline)["passed"]
    assert compare.compare(run, baseline, compare.Thresholds(throughput=0.40))["passed"]
    looser = arguments.parse_arguments(["--smoke", "--compare-threshold", "0.4"])
    assert compare.compare(run, baseline, compare.thresholds_from(looser))["passed"]


def test_a_baseline_scenario_missing_from_the_run_fails_unless_not_selected() -> None:
    baseline = build(["--scenarios", "get_hit,get_miss_sqlite"], full_records())
    records = [r for r in full_records() if r["scenario"] != "get_miss_sqlite"]

    selected_but_missing = build(["--scenarios", "get_hit,get_miss_sqlite"], records)
    comparison = compare.compare(selected_but_missing, baseline)
    assert comparison["passed"] is False
    (row,) = [r for r in comparison["rows"] if r["scenario"] == "get_miss_sqlite"]
    assert row["status"] == compare.MISSING
    assert "get_miss_sqlite: in the baseline but missing from the run" in comparison["failures"][0]

    not_selected = build(["--scenarios", "get_hit"], records)
    comparison = compare.compare(not_selected, baseline)
    assert comparison["passed"] is True
    (row,) = [r for r in comparison["rows"] if r["scenario"] == "get_miss_sqlite"]
    assert row["status"] == compare.NOT_SELECTED


def test_the_compare_command_compares_two_run_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline, run = tmp_path / "baseline.json", tmp_path / "run.json"
    baseline.write_text(json.dumps(build(["--smoke"], smoke_records(throughput_ratio=0.80))))
    run.write_text(json.dumps(build(["--smoke"], smoke_records(throughput_ratio=0.50))))

    assert compare.main([str(run), str(baseline)]) == 1
    out = capsys.readouterr()
    assert "get_hit" in out.out
    assert "-37.5%" in out.out
    assert "comparison: FAILED" in out.out
    assert "BENCHMARK REGRESSION against the baseline" in out.err
    assert compare.main([str(run), str(baseline), "--compare-threshold", "0.5"]) == 0


def test_an_unreadable_baseline_stops_the_load_tool_before_any_load(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="cannot read the benchmark run"):
        load_tool.main(["--smoke", "--compare", str(tmp_path / "absent.json")])


def test_the_committed_smoke_baseline_compares_with_itself() -> None:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "baselines" / "smoke.json"
    baseline = compare.load(path)
    comparison = compare.compare(baseline, baseline)
    assert comparison["passed"] is True
    compared = [r for r in comparison["rows"] if r["status"] == compare.OK]
    assert {r["figure"] for r in compared} >= {"throughput_ratio", "p99_ratio_at_25pct"}


# -- the plots -------------------------------------------------------------------------


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return int(width), int(height)


def test_one_legible_plot_per_scenario_linked_from_the_markdown(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = build(["--scenarios", "get_hit,get_miss_sqlite"], full_records())
    paths = report.write(result, tmp_path, smoke=False)

    assert [p.name.rsplit("-", 1)[-1] for p in paths.plots] == [
        "get_hit.png",
        "get_miss_sqlite.png",
    ]
    text = paths.markdown.read_text()
    for path in paths.plots:
        width, height = _png_size(path)
        assert 800 <= width <= 1400
        assert 500 <= height <= 1200
        assert f"]({path.name})" in text


def _labels(axis: Any) -> list[str]:
    return [text.get_text() for text in axis.get_legend().get_texts()]


def test_the_plot_reads_log_load_saturation_targets_and_unjoined_runs() -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from benchmarks.load import plot

    result = build(
        ["--scenarios", "get_hit,get_miss_sqlite", "--repeat", "2"], full_records(repeats=2)
    )

    figure = plot.scenario_figure(result, "get_hit")
    try:
        (axis,) = figure.axes
        assert axis.get_xscale() == "log"
        labels = _labels(axis)
        assert "saturated: offered rate not delivered" in labels
        assert any(label.startswith("floor saturation (h2load)") for label in labels)
        assert any(label.startswith("scenario saturation (h2load)") for label in labels)
        assert "target: saturation >= 0.90 x floor's" in labels
        assert "target: p99 <= 1.5 x floor's at 55% of its saturation" in labels
        # Each repeat's floor is its own line, with only the rounds of this scenario
        # (not the 500 rps round of the SQLite miss, nor the 20 rps one).
        floor_p99 = [
            line for line in axis.get_lines()
            if line.get_color() == plot.FLOOR_COLOR and line.get_linestyle() == "-"
            and line.get_marker() == "o"
        ]  # fmt: skip
        assert len(floor_p99) == 2
        for line in floor_p99:
            assert list(line.get_xdata()) == [FLOOR_RPS * 0.25, FLOOR_RPS * 0.55]
    finally:
        plt.close(figure)

    figure = plot.scenario_figure(result, "get_miss_sqlite")
    try:
        (axis,) = figure.axes
        assert "target: p99 < 2 ms at 500 rps" in _labels(axis)
        assert "saturated: offered rate not delivered" not in _labels(axis)
    finally:
        plt.close(figure)
