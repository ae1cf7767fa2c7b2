"""One latency-versus-offered-load figure per scenario, sized to read in a pull request.

Each figure shows the scenario's open-loop p99 (solid) and p50 (dashed) against the offered
rate on a log axis, beside the floor's points measured in the same rounds (one line per
measuring round and repeat: points of separately measured runs are never joined), the
closed-loop saturation of the scenario and of the floor (a star and a dotted line), the
open-loop points whose offered rate was not delivered (saturated, a red ring), and the
scenario's targets (issue 10, scenarios.py) as grey dashed lines.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks.load import scenarios
from benchmarks.load.figures import overloaded
from benchmarks.load.plan import OPEN
from benchmarks.load.scenarios import H2LOAD, SCENARIOS, Scenario

# 8 x 5.5 inches at 120 dpi: 960 x 660 pixels, shown unscaled in a pull request's
# description (about 880 pixels wide) with 10-point text still legible.
FIGURE_INCHES = (8.0, 5.5)
DPI = 120
SCENARIO_COLOR = "tab:blue"
FLOOR_COLOR = "black"
TARGET_COLOR = "0.45"
SATURATED_COLOR = "tab:red"


def plot_file(folder: Path, stem: str, scenario_key: str) -> Path:
    return folder / f"{stem}-{scenario_key}.png"


def plot_scenarios(result: dict[str, Any], folder: Path, stem: str) -> list[Path]:
    """Writes one PNG per scenario of the run's summary; [] when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (make setup installs it): no plots", flush=True)
        return []
    paths = []
    for key in result["summary"]:
        drawn = scenario_figure(result, key)
        if drawn is None:
            continue
        try:
            path = plot_file(folder, stem, key)
            drawn.savefig(path, dpi=DPI, bbox_inches="tight")
            paths.append(path)
        finally:
            plt.close(drawn)
    return paths


def scenario_figure(result: dict[str, Any], key: str) -> Any:
    """The scenario's matplotlib figure (the caller closes it), or None when the run has
    no open-loop points of it."""
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=FIGURE_INCHES, dpi=DPI)
    medians = result["summary"][key]["median"]
    if not _draw(figure.add_subplot(), result, SCENARIOS[key], medians):
        plt.close(figure)
        return None
    figure.suptitle(_subtitle(result, medians), fontsize=8, y=0.995)
    return figure


def _subtitle(result: dict[str, Any], medians: dict[str, Any]) -> str:
    env = result["environment"]
    settings = result["settings"]
    return (
        f"commit {env['git_commit'][:8]}{' (dirty)' if env.get('git_dirty') else ''}, "
        f"{result['created']}, {env['cpu_count']} CPUs, {settings['workers']} workers, "
        f"{settings['repeat']} repeat(s); the floor: {medians.get('floor_kind') or '-'}"
    )


def _open_records(result: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [r for r in result["phases"] if r["shape"] == OPEN and r["scenario"] == key]


def _rounds(records: Iterable[dict[str, Any]]) -> dict[tuple[int, Any], list[dict[str, Any]]]:
    """Open-loop records by (repeat, measuring round). Records of runs before the round
    was recorded are told apart by their offered rate (each its own round)."""
    rounds: dict[tuple[int, Any], list[dict[str, Any]]] = {}
    for record in records:
        round_id = record.get("open_round", f"rate {record['offered_rps']}")
        rounds.setdefault((record["repeat"], round_id), []).append(record)
    return rounds


def _floor_points(
    result: dict[str, Any], scenario: Scenario, mine: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The floor's open-loop records measured in the same rounds as the scenario's."""
    wanted = set(_rounds(mine))
    return [
        record
        for key, records in _rounds(_open_records(result, scenario.floor)).items()
        if key in wanted
        for record in records
    ]


def _series(
    records: list[dict[str, Any]], method: str
) -> dict[int, list[tuple[float, dict[str, Any], dict[str, Any]]]]:
    """Per repeat, (offered rps, latency figures, record) sorted by rate: one line each
    (the floor of a scenario is measured in the same rounds within a repeat)."""
    by_repeat: dict[int, list[tuple[float, dict[str, Any], dict[str, Any]]]] = {}
    for record in records:
        figures = record["methods"].get(method)
        if figures and record.get("offered_rps"):
            by_repeat.setdefault(record["repeat"], []).append(
                (float(record["offered_rps"]), figures, record)
            )
    return {repeat: sorted(points, key=lambda p: p[0]) for repeat, points in by_repeat.items()}


def _draw(axis: Any, result: dict[str, Any], scenario: Scenario, medians: dict[str, Any]) -> bool:
    floor = SCENARIOS[scenario.floor]
    mine = _open_records(result, scenario.key)
    theirs = _floor_points(result, scenario, mine)
    xs: list[float] = []
    ys: list[float] = []
    saturated_labelled = False
    for name, method, records, color in (
        (floor.title, floor.method, theirs, FLOOR_COLOR),
        (scenario.title, scenario.method, mine, SCENARIO_COLOR),
    ):
        for index, (_repeat, points) in enumerate(sorted(_series(records, method).items())):
            rates = [x for x, _, _ in points]
            p99 = [f["p99_us"] / 1000 for _, f, _ in points]
            p50 = [f["p50_us"] / 1000 for _, f, _ in points]
            first = index == 0
            alpha = 1.0 if first else 0.45
            axis.plot(rates, p99, "o-", color=color, alpha=alpha,
                      label=f"{name}: p99" if first else None)  # fmt: skip
            axis.plot(rates, p50, "s--", color=color, alpha=alpha * 0.7, markersize=4,
                      label=f"{name}: p50" if first else None)  # fmt: skip
            xs += rates
            ys += p99 + p50
            over = [(x, y) for (x, _, r), y in zip(points, p99, strict=True) if overloaded(r)]
            if over:
                axis.scatter(
                    [x for x, _ in over], [y for _, y in over], s=220, facecolors="none",
                    edgecolors=SATURATED_COLOR, linewidths=2, zorder=5,
                    label=None if saturated_labelled else "saturated: offered rate not delivered",
                )  # fmt: skip
                saturated_labelled = True
    if not xs:
        return False
    xs += _draw_saturation(axis, scenario, medians, ys)
    xs += _draw_targets(axis, scenario, medians, theirs, ys)
    axis.set_xscale("log")
    axis.set_yscale("log")
    _plain_numbers(axis)
    low, high = min(xs), max(xs)
    axis.set_xlim(low / 1.6, high * 1.6)
    if ys:
        axis.set_ylim(min(ys) / 1.8, max(ys) * 1.8)
    axis.set_xlabel("offered load (requests per second, log scale)")
    axis.set_ylabel("latency from intended send (ms, log scale)")
    axis.set_title(scenario.title, fontsize=11)
    axis.grid(True, which="both", alpha=0.25)
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8, frameon=False)
    return True


def _plain_numbers(axis: Any) -> None:
    """Log axes labelled 1, 2, 5 x 10^n in plain numbers (500, 1,000, 2,000 rps; 0.5, 1,
    2 ms) rather than powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for which in (axis.xaxis, axis.yaxis):
        which.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        which.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:,.10g}"))
        which.set_minor_formatter(NullFormatter())


def _draw_saturation(
    axis: Any, scenario: Scenario, medians: dict[str, Any], ys: list[float]
) -> list[float]:
    """The closed-loop saturation of the scenario and of its floor: a dotted line at its
    throughput and a star at its p99 there. Returns the rates drawn."""
    loader = "h2load" if scenario.loader == H2LOAD else "Python closed loop"
    drawn = []
    for rps_key, p99_key, name, color in (
        ("floor_throughput_rps", "floor_closed_p99_us", "floor", FLOOR_COLOR),
        ("throughput_rps", "closed_p99_us", "scenario", SCENARIO_COLOR),
    ):
        rps = medians.get(rps_key)
        if not rps:
            continue
        axis.axvline(rps, color=color, linestyle=":", linewidth=1.2)
        p99 = medians.get(p99_key)
        label = f"{name} saturation ({loader}): {rps:,.0f} rps"
        if p99:
            axis.plot([rps], [p99 / 1000], "*", color=color, markersize=13, label=label + ", p99")
            ys.append(p99 / 1000)
        else:
            axis.plot([], [], ":", color=color, label=label)
        drawn.append(float(rps))
    return drawn


def _draw_targets(
    axis: Any,
    scenario: Scenario,
    medians: dict[str, Any],
    floor_records: list[dict[str, Any]],
    ys: list[float],
) -> list[float]:
    """The scenario's targets (issue 10; none for the mix and the Spanner emulator).
    Returns the rates drawn."""
    style = {"color": TARGET_COLOR, "linestyle": "--", "linewidth": 1.3}
    floor_rps = medians.get("floor_throughput_rps")
    drawn: list[float] = []

    def throughput(ratio: float) -> None:
        if floor_rps:
            rate = ratio * float(floor_rps)
            axis.axvline(rate, **style, label=f"target: saturation >= {ratio:.2f} x floor's")
            drawn.append(rate)

    if scenario.key == "get_hit":
        throughput(scenarios.TARGET_HIT_THROUGHPUT_RATIO)
        ratio, fraction = scenarios.TARGET_HIT_P99_RATIO, scenarios.COMPARE_FRACTION
        at = [r for r in floor_records if r.get("load_fraction") == fraction]
        method = SCENARIOS[scenario.floor].method
        points = [
            (float(r["offered_rps"]), r["methods"][method]["p99_us"] / 1000 * ratio)
            for r in at
            if method in r["methods"]
        ]
        if points:
            axis.plot(
                [x for x, _ in points], [y for _, y in points], "_", color=TARGET_COLOR,
                markersize=28, markeredgewidth=2.5,
                label=f"target: p99 <= {ratio:g} x floor's at {fraction:.0%} of its saturation",
            )  # fmt: skip
            drawn += [x for x, _ in points]
            ys += [y for _, y in points]
    elif scenario.key == "offers":
        throughput(scenarios.TARGET_OFFERS_THROUGHPUT_RATIO)
    elif scenario.key == "batch":
        rate = scenarios.TARGET_BATCH_DECISIONS_PER_SECOND / scenario.decisions
        axis.axvline(
            rate, **style,
            label=f"target: >= {scenarios.TARGET_BATCH_DECISIONS_PER_SECOND:,.0f} decisions/s "
            f"({rate:,.0f} rps)",
        )  # fmt: skip
        drawn.append(rate)
    elif scenario.key == "get_miss_sqlite":
        bound = scenarios.TARGET_MISS_SQLITE_P99_US / 1000
        axis.axhline(
            bound, **style,
            label=f"target: p99 < {bound:g} ms at {scenarios.TARGET_MISS_RATE:.0f} rps",
        )  # fmt: skip
        axis.plot([scenarios.TARGET_MISS_RATE], [bound], "D", color=TARGET_COLOR, markersize=6)
        drawn.append(scenarios.TARGET_MISS_RATE)
        ys.append(bound)
    return drawn
