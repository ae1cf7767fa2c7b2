"""The load tool's command line (`python -m benchmarks.load --help`), and the scenarios it
selects."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from benchmarks.load import compare, scenarios
from benchmarks.load.scenarios import (
    GROUPS,
    SCENARIOS,
    Scenario,
)

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "results"


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--smoke", action="store_true", help="short CI run with bound checks")
    parser.add_argument("--check", action="store_true", help="fail past the smoke bounds")
    parser.add_argument(
        "--scenarios", help="comma-separated scenario keys (default: all): "
        + ", ".join(k for k in SCENARIOS if not k.startswith("floor"))
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="server workers (each server)"
    )
    parser.add_argument(
        "--h2load-seconds", type=float, default=5.0, help="h2load saturation: measured seconds"
    )
    parser.add_argument(
        "--latency-seconds", type=float, default=3.0, help="h2load 1 in flight: measured seconds"
    )
    parser.add_argument(
        "--h2load-connections",
        type=int,
        default=scenarios.H2LOAD_CONNECTIONS_PER_WORKER,
        help="h2load saturation: connections per server worker (1 RPC in flight each)",
    )
    parser.add_argument(
        "--h2load-slices",
        type=int,
        default=scenarios.H2LOAD_SLICES,
        help="h2load: cut each server's run into N slices, interleaved with the other servers'",
    )
    parser.add_argument(
        "--open-slices",
        type=int,
        default=scenarios.OPEN_SLICES,
        help="Python open loop: cut each server's phase into N slices, interleaved",
    )
    parser.add_argument(
        "--h2load-warmup",
        type=int,
        default=scenarios.H2LOAD_WARMUP_REQUESTS,
        help="h2load saturation: unmeasured requests first",
    )
    parser.add_argument("--generators", type=int, default=2, help="Python load generator processes")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="Python closed loop (mix, Spanner): RPCs in flight in all",
    )
    parser.add_argument(
        "--loads",
        default=",".join(str(f) for f in scenarios.DEFAULT_FRACTIONS),
        help="Python open-loop rates as fractions of the floor's h2load saturation",
    )
    parser.add_argument(
        "--compare-fraction",
        type=float,
        default=scenarios.COMPARE_FRACTION,
        help="the open-loop fraction at which p99 is compared with the floor's",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="BASELINE",
        help="a baseline run's JSON (e.g. benchmarks/baselines/smoke.json): print each "
        "scenario's ratios to the floor beside the baseline's; exit 1 past the thresholds",
    )
    compare.add_threshold_arguments(parser)
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="Python phases: measured seconds"
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="Python phases: unmeasured seconds first"
    )
    parser.add_argument("--repeat", type=int, default=1, help="repeat the whole plan N times")
    parser.add_argument("--no-spanner", action="store_true", help="skip the Spanner scenario")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    parser.add_argument(
        "--keep", type=Path, help="keep the servers' logs, database and credentials here"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.check = True
        args.scenarios = args.scenarios or ",".join(scenarios.SMOKE_SCENARIOS)
        args.compare_fraction = scenarios.SMOKE_COMPARE_FRACTION
        args.loads = str(args.compare_fraction)
        args.seconds = scenarios.SMOKE_SECONDS
        args.warmup = scenarios.SMOKE_WARMUP_SECONDS
        args.h2load_seconds = scenarios.SMOKE_H2LOAD_SECONDS
        args.latency_seconds = scenarios.SMOKE_LATENCY_SECONDS
        args.h2load_warmup = scenarios.SMOKE_H2LOAD_WARMUP_REQUESTS
        args.h2load_slices = scenarios.SMOKE_H2LOAD_SLICES
        args.open_slices = scenarios.SMOKE_OPEN_SLICES
        args.repeat = scenarios.SMOKE_REPEAT
    return args


def selected_scenarios(args: argparse.Namespace) -> list[Scenario]:
    keys = [k for _, members in GROUPS for k in members]
    if args.scenarios:
        wanted = [k.strip() for k in args.scenarios.split(",") if k.strip()]
        unknown = [k for k in wanted if k not in keys]
        if unknown:
            raise SystemExit(f"unknown scenario(s): {', '.join(unknown)}")
        keys = [k for k in keys if k in wanted]
    if args.no_spanner and "get_miss_spanner" in keys:
        keys.remove("get_miss_spanner")
    return [SCENARIOS[k] for k in keys]
