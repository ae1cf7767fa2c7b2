"""End-to-end load benchmark of the service against the empty-handler floor.

    python -m benchmarks.load            # full run (~5 minutes): JSON, Markdown, PNG
    python -m benchmarks.load --smoke    # CI smoke (~30 s): fails past the stated bounds

See the README's Performance section and benchmarks/load/scenarios.py for what is
measured, the targets and the smoke bounds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.data import seed, write_credentials
from benchmarks.load import report, scenarios
from benchmarks.load.plan import CLOSED, OPEN, Phase
from benchmarks.load.runner import Generators
from benchmarks.load.scenarios import (
    CACHED,
    FLOOR,
    GROUPS,
    SCENARIOS,
    SPANNER,
    UNCACHED,
    Scenario,
)
from benchmarks.load.servers import ServerProcess, start_floor, start_service

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "results"


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--smoke", action="store_true", help="short CI run with bound checks")
    parser.add_argument("--check", action="store_true", help="fail past the smoke bounds")
    parser.add_argument(
        "--scenarios", help="comma-separated scenario keys (default: all): "
        + ", ".join(k for k in SCENARIOS if not k.startswith("floor"))
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--generators", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="closed loop: RPCs in flight in all"
    )
    parser.add_argument(
        "--loads",
        default=",".join(str(f) for f in scenarios.DEFAULT_FRACTIONS),
        help="open-loop rates as fractions of the floor's saturation",
    )
    parser.add_argument(
        "--compare",
        type=float,
        default=scenarios.COMPARE_FRACTION,
        help="the open-loop fraction at which p99 is compared with the floor's",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds a phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
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
        args.compare = scenarios.SMOKE_COMPARE_FRACTION
        args.loads = str(args.compare)
        args.seconds = scenarios.SMOKE_SECONDS
        args.warmup = scenarios.SMOKE_WARMUP_SECONDS
        args.repeat = scenarios.SMOKE_REPEAT
    return args


def _selected(args: argparse.Namespace) -> list[Scenario]:
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


class Run:
    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args = args
        self.folder = folder
        self.servers: dict[str, ServerProcess] = {}
        self.skipped: dict[str, str] = {}
        self.records: list[dict[str, Any]] = []
        self.fractions = tuple(float(f) for f in args.loads.split(",") if f.strip())
        if args.compare not in self.fractions:
            self.fractions = (*self.fractions, args.compare)
            args.loads = ",".join(str(f) for f in self.fractions)

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    def start_servers(self, selected: list[Scenario], stack: contextlib.ExitStack) -> None:
        args, folder = self.args, self.folder
        credentials = write_credentials(folder / "credentials.yaml")
        common = {
            "ENTITLEMENTS_CREDENTIALS_FILE": str(credentials),
            "ENTITLEMENTS_DATA_DIR": str(folder),
            "ENTITLEMENTS_AUDIT_LOG_FILE": str(folder / "audit.log"),
            # The admission bound (default: the 16 handler threads) is raised for the floor
            # and the service alike, so that connection imbalance cannot shed load;
            # RESOURCE_EXHAUSTED is still counted as an error if it happens.
            "ENTITLEMENTS_MAX_CONCURRENT_RPCS": "64",
        }
        needed = {s.server for s in selected}
        now = datetime.now(UTC)
        self.log(f"starting the floor ({args.workers} workers)")
        self.servers[FLOOR] = stack.enter_context(
            _stopping(start_floor(args.workers, common, folder / "floor.log"))
        )
        if needed & {CACHED, UNCACHED}:
            users = max(s.workload.users for s in selected if s.server in (CACHED, UNCACHED))
            db = folder / "bench.db"
            self.log(f"seeding {users} users into SQLite")
            from storage.sqlite import SqliteRepository

            repository = SqliteRepository(db)
            seed(repository, users, now)
            repository.close()
            for name, ttl in ((CACHED, "3600"), (UNCACHED, "0")):
                if name in needed:
                    self.log(f"starting {name} ({args.workers} workers, cache TTL {ttl} s)")
                    env = {**common, "ENTITLEMENTS_CACHE_TTL_SECONDS": ttl}
                    self.servers[name] = stack.enter_context(
                        _stopping(
                            start_service(
                                name, args.workers, f"sqlite:///{db}", env, folder / f"{name}.log"
                            )
                        )
                    )
        if SPANNER in needed:
            from benchmarks.load import spanner

            self.log("starting the Spanner emulator and seeding it")
            users = SCENARIOS["get_miss_spanner"].workload.users
            emulator, reason = spanner.prepare(users, now, folder / "emulator.log")
            if emulator is None:
                self.skipped["get_miss_spanner"] = reason
                self.log(f"skipping get_miss_spanner: {reason}")
            else:
                stack.callback(emulator.stop)
                env = {**common, "ENTITLEMENTS_CACHE_TTL_SECONDS": "0", **emulator.server_env()}
                self.log(f"starting {SPANNER}")
                self.servers[SPANNER] = stack.enter_context(
                    _stopping(
                        start_service(
                            SPANNER, args.workers, emulator.storage_url, env,
                            folder / f"{SPANNER}.log",
                        )
                    )
                )  # fmt: skip

    def phase(
        self,
        generators: Generators,
        scenario: Scenario,
        repeat: int,
        shape: str,
        rate: float = 0.0,
        fraction: float | None = None,
    ) -> dict[str, Any]:
        server = self.servers[scenario.server]
        args = self.args
        label = f"{scenario.key} {shape}" + (f" {rate:.0f} rps" if shape == OPEN else "")
        phase = Phase(
            name=label,
            target=server.target,
            server_pids=server.worker_pids,
            workload=scenario.workload,
            shape=shape,
            concurrency=max(1, (scenario.concurrency or args.concurrency) // args.generators),
            rate=rate,
            warmup_seconds=args.warmup,
            seconds=args.seconds,
        )
        record = generators.run(phase, server)
        record.update(
            scenario=scenario.key,
            server=scenario.server,
            repeat=repeat,
            load_fraction=fraction,
        )
        self.records.append(record)
        method = record["methods"].get(scenario.method, {})
        self.log(
            f"{label:<42} {record['achieved_rps']:>8.0f} rps  p50 {method.get('p50_us', 0):>7.0f}"
            f"  p99 {method.get('p99_us', 0):>7.0f} us  server {record['server_cpu_us_per_rpc']}"
            f" us/rpc  errors {sum(record['errors'].values())}"
        )
        return record

    def measure(self, generators: Generators, selected: list[Scenario]) -> None:
        keys = {s.key for s in selected} - set(self.skipped)
        for repeat in range(self.args.repeat):
            for floor_key, members in GROUPS:
                chosen = [SCENARIOS[k] for k in members if k in keys]
                if not chosen:
                    continue
                floor = SCENARIOS[floor_key]
                saturation = self.phase(generators, floor, repeat, CLOSED)["achieved_rps"]
                for scenario in chosen:
                    self.phase(generators, scenario, repeat, CLOSED)
                points: list[tuple[float, float | None]] = [
                    (saturation * f, f)
                    for f in self.fractions
                    if any(_measures_fraction(s, f) for s in chosen)
                ]
                fixed = sorted({r for s in chosen for r in s.fixed_rates})
                points += [(r, None) for r in fixed]
                for rate, fraction in points:
                    if rate <= 0:
                        continue
                    self.phase(generators, floor, repeat, OPEN, rate, fraction)
                    for scenario in chosen:
                        if fraction is None and rate not in scenario.fixed_rates:
                            continue
                        if fraction is not None and not _measures_fraction(scenario, fraction):
                            continue
                        self.phase(generators, scenario, repeat, OPEN, rate, fraction)


def _measures_fraction(scenario: Scenario, fraction: float) -> bool:
    return scenario.fractions is None or fraction in scenario.fractions


@contextlib.contextmanager
def _stopping(server: ServerProcess) -> Any:
    try:
        yield server
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    selected = _selected(args)
    started = time.monotonic()
    with contextlib.ExitStack() as folders:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            folder = args.keep
        else:
            folder = Path(folders.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        run = Run(args, folder)
        with contextlib.ExitStack() as stack:
            run.start_servers(selected, stack)
            generators = Generators.start(args.generators)
            stack.callback(generators.stop)
            run.measure(generators, selected)
        elapsed = time.monotonic() - started
        result = report.build(run.records, selected, run.skipped, args, elapsed)
    paths = report.write(result, args.out, smoke=args.smoke)
    print(paths.markdown.read_text())
    run.log(f"results: {paths.json}, {paths.markdown}" + (f", {paths.plot}" if paths.plot else ""))
    if args.check:
        failures = report.check_smoke(result)
        for failure in failures:
            print(f"BENCHMARK REGRESSION: {failure}", file=sys.stderr)
        if failures:
            return 1
        print("benchmark smoke: within bounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
