"""One load run (`Run`): the servers it starts (the service per storage, the floors), and
the phases it measures on them (h2load saturation and latency, the Python generator's
closed and open loops), in the order and repeats of the scenario groups."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.data import seed, write_credentials
from benchmarks.floor_server import KINDS
from benchmarks.load import figures, fixed, h2load, runner
from benchmarks.load.plan import CLOSED, OPEN, Phase
from benchmarks.load.runner import Generators, RawPhase
from benchmarks.load.scenarios import (
    CACHED,
    FLOOR,
    FLOOR_SERVERS,
    GROUPS,
    H2LOAD,
    PYTHON,
    SCENARIOS,
    SPANNER,
    UNCACHED,
    Scenario,
)
from benchmarks.load.servers import (
    ServerProcess,
    machine_cpu,
    start_floor,
    start_service,
)

# h2load's 1-in-flight latency run is warmed up by this many requests.
LATENCY_WARMUP_REQUESTS = 200


class Run:
    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args = args
        self.folder = folder
        self.servers: dict[str, ServerProcess] = {}
        self.skipped: dict[str, str] = {}
        self.records: list[dict[str, Any]] = []
        self.fractions = tuple(float(f) for f in args.loads.split(",") if f.strip())
        if args.compare_fraction not in self.fractions:
            self.fractions = (*self.fractions, args.compare_fraction)
            args.loads = ",".join(str(f) for f in self.fractions)
        # The answers each (scenario, server) gave a real client before any load.
        self.answers: dict[tuple[str, str], list[bytes]] = {}
        # (repeat, floor scenario) -> the better floor kind and its h2load saturation.
        self.floors: dict[tuple[int, str], tuple[str, float]] = {}
        # (repeat, floor scenario): the floor's Python closed loop was measured.
        self.python_floors: set[tuple[int, str]] = set()
        # Open-loop rounds so far: the records of one round (a floor and the scenarios
        # measured at one rate, interleaved) carry its number (the plot pairs by it).
        self.open_rounds = 0
        self._generators: Generators | None = None
        self._stack: contextlib.ExitStack | None = None

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    # -- servers ----------------------------------------------------------------------

    def start_servers(self, selected: list[Scenario], stack: contextlib.ExitStack) -> None:
        self._stack = stack
        args, folder = self.args, self.folder
        credentials = write_credentials(folder / "credentials.yaml")
        common = {
            "ENTITLEMENTS_CREDENTIALS_FILE": str(credentials),
            "ENTITLEMENTS_DATA_DIR": str(folder),
            "ENTITLEMENTS_AUDIT_LOG_FILE": str(folder / "audit.log"),
            # The admission bound is set for the floors and the service alike, above the
            # RPCs in flight any phase sends to a worker; RESOURCE_EXHAUSTED is still
            # counted as an error if it happens.
            "ENTITLEMENTS_MAX_CONCURRENT_RPCS": "64",
        }
        needed = {s.server for s in selected}
        now = datetime.now(UTC)
        for kind in KINDS:
            name = FLOOR_SERVERS[kind]
            self.log(f"starting the {kind} floor ({args.workers} workers)")
            self.servers[name] = stack.enter_context(
                _stopping(start_floor(kind, args.workers, common, folder / f"{name}.log"))
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

    def generators(self) -> Generators:
        """The Python load generator processes, started on first use."""
        if self._generators is None:
            assert self._stack is not None
            self._generators = Generators.start(self.args.generators)
            self._stack.callback(self._generators.stop)
        return self._generators

    def _server(self, scenario: Scenario, kind: str | None) -> tuple[str, ServerProcess]:
        name = FLOOR_SERVERS[kind] if scenario.server == FLOOR and kind else scenario.server
        return name, self.servers[name]

    # -- h2load -----------------------------------------------------------------------

    def _h2load_target(self, scenario: Scenario, server: ServerProcess) -> h2load.Target:
        connections = self.args.h2load_connections * max(1, len(server.worker_pids))
        return fixed.target(scenario, server.host, server.port, connections)

    def check(self, scenario: Scenario, kind: str | None = None) -> list[bytes]:
        """Sends the scenario's h2load request(s) once with a real gRPC client: status OK
        and the answer to the request, or NotOk (nothing is loaded)."""
        name, server = self._server(scenario, kind)
        key = (scenario.key, name)
        if key not in self.answers:
            target = self._h2load_target(scenario, server)
            self.answers[key] = h2load.check_all(target, parse=fixed.checker(scenario))
        return self.answers[key]

    def _h2load_run(
        self, scenario: Scenario, kind: str | None, mode: str, seconds: float, warmup: int
    ) -> h2load.H2loadResult:
        """One h2load run: saturation (connections per worker x 1 in flight) or latency
        (1 connection x 1 in flight)."""
        _name, server = self._server(scenario, kind)
        expected = self.check(scenario, kind)
        target = self._h2load_target(scenario, server)
        if mode == h2load.SATURATION:
            return h2load.saturation(
                target,
                connections=self.args.h2load_connections * max(1, len(server.worker_pids)),
                requests=None,
                duration_s=seconds,
                warmup_requests=warmup,
                server_pids=server.worker_pids,
                check=False,
                expected=expected,
            )
        return h2load.latency(
            target,
            requests=None,
            duration_s=seconds,
            warmup_requests=warmup,
            server_pids=server.worker_pids,
            check=False,
            expected=expected,
        )

    def h2load_phases(
        self, items: list[tuple[Scenario, str | None]], repeat: int, mode: str
    ) -> list[dict[str, Any]]:
        """h2load runs of several (scenario, floor kind) on their servers, interleaved:
        the time is cut into slices, each item runs once per slice, in order on even
        slices and in reverse order on odd ones (so a drift in the machine's other load
        falls on every item alike); each item's slices are merged into its record."""
        args = self.args
        slices = max(1, args.h2load_slices)
        if mode == h2load.SATURATION:
            seconds, warmup = args.h2load_seconds / slices, args.h2load_warmup
        else:
            seconds, warmup = args.latency_seconds / slices, LATENCY_WARMUP_REQUESTS
        parts: list[list[h2load.H2loadResult]] = [[] for _ in items]
        busy: list[float] = [0.0 for _ in items]
        for index in range(slices):
            order = list(range(len(items)))
            for item in order if index % 2 == 0 else reversed(order):
                scenario, kind = items[item]
                machine0 = machine_cpu()
                result = self._h2load_run(
                    scenario, kind, mode, seconds, warmup if index == 0 else 0
                )
                machine1 = machine_cpu()
                parts[item].append(result)
                busy[item] += (machine1[0] - machine0[0]) / max(1e-9, machine1[1] - machine0[1])
        records = []
        for item, (scenario, kind) in enumerate(items):
            name, _server = self._server(scenario, kind)
            result = h2load.merge(parts[item])
            record = figures.h2load_record(result, scenario, busy[item] / slices)
            record.update(
                phase=f"{scenario.key}" + (f" [{kind}]" if kind else "") + f" h2load {mode}",
                scenario=scenario.key,
                server=name,
                floor_kind=kind,
                repeat=repeat,
                load_fraction=None,
                slices=slices,
                # Each slice's figures, in slice order (paired with the other servers').
                slice_rps=[round(r.rps, 1) for r in parts[item]],
                slice_p99_us=[round(r.p99_ms * 1000, 1) for r in parts[item]],
            )
            self.records.append(record)
            self._log_record(record, scenario)
            records.append(record)
        return records

    # -- the Python generator ---------------------------------------------------------

    def _phase(
        self, scenario: Scenario, kind: str | None, shape: str, rate: float, seconds: float
    ) -> Phase:
        _name, server = self._server(scenario, kind)
        args = self.args
        return Phase(
            name=f"{scenario.key}"
            + (f" [{kind}]" if kind else "")
            + f" python {shape}"
            + (f" {rate:.0f} rps" if shape == OPEN else ""),
            target=server.target,
            server_pids=server.worker_pids,
            workload=scenario.workload,
            shape=shape,
            concurrency=max(1, (scenario.concurrency or args.concurrency) // args.generators),
            rate=rate,
            warmup_seconds=args.warmup,
            seconds=seconds,
        )

    def _python_record(
        self,
        scenario: Scenario,
        kind: str | None,
        phase: Phase,
        runs: list[RawPhase],
        repeat: int,
        fraction: float | None,
    ) -> dict[str, Any]:
        name, _server = self._server(scenario, kind)
        record = runner.record(phase, self.args.generators, runs)
        record.update(
            scenario=scenario.key,
            server=name,
            floor_kind=kind,
            loader=PYTHON,
            repeat=repeat,
            load_fraction=fraction,
        )
        self.records.append(record)
        self._log_record(record, scenario)
        return record

    def python_phase(
        self, scenario: Scenario, repeat: int, shape: str, kind: str | None = None
    ) -> dict[str, Any]:
        """A Python closed-loop phase (workloads h2load cannot send)."""
        phase = self._phase(scenario, kind, shape, 0.0, self.args.seconds)
        _name, server = self._server(scenario, kind)
        raw = self.generators().measure(phase, server)
        return self._python_record(scenario, kind, phase, [raw], repeat, None)

    def open_loop(
        self,
        items: list[tuple[Scenario, str | None]],
        repeat: int,
        rate: float,
        fraction: float | None,
    ) -> None:
        """Python open-loop phases at `rate` on several servers, interleaved in slices
        like `h2load_phases` (--open-slices), each server's slices pooled."""
        slices = max(1, self.args.open_slices)
        seconds = self.args.seconds / slices
        phases = [self._phase(s, kind, OPEN, rate, seconds) for s, kind in items]
        runs: list[list[RawPhase]] = [[] for _ in items]
        for index in range(slices):
            order = list(range(len(items)))
            for item in order if index % 2 == 0 else reversed(order):
                scenario, kind = items[item]
                _name, server = self._server(scenario, kind)
                runs[item].append(self.generators().measure(phases[item], server))
        self.open_rounds += 1
        for item, (scenario, kind) in enumerate(items):
            record = self._python_record(scenario, kind, phases[item], runs[item], repeat, fraction)
            record["open_round"] = self.open_rounds
            # Each slice's p99, in slice order (paired with the other servers').
            record["slice_p99_us"] = [
                runner.record(phases[item], self.args.generators, [raw])["methods"]
                .get(scenario.method, {})
                .get("p99_us")
                for raw in runs[item]
            ]

    def _log_record(self, record: dict[str, Any], scenario: Scenario) -> None:
        method = record["methods"].get(scenario.method, {})
        cpu = record["server_cpu_us_per_rpc"]
        self.log(
            f"{record['phase']:<52} {record['achieved_rps']:>8.0f} rps"
            f"  p50 {method.get('p50_us', 0):>7.0f}  p99 {method.get('p99_us', 0):>7.0f} us"
            f"  server {cpu if cpu is None else round(cpu)} us/rpc"
            f"  errors {sum(record['errors'].values())}"
        )

    # -- the plan ---------------------------------------------------------------------

    def measure(self, selected: list[Scenario]) -> None:
        keys = {s.key for s in selected} - set(self.skipped)
        for repeat in range(self.args.repeat):
            for floor_key, members in GROUPS:
                chosen = [SCENARIOS[k] for k in members if k in keys]
                if chosen:
                    self.measure_group(repeat, SCENARIOS[floor_key], chosen)

    def measure_group(self, repeat: int, floor: Scenario, chosen: list[Scenario]) -> None:
        h2loaded = []
        for scenario in chosen:
            if scenario.loader != H2LOAD:
                continue
            try:
                self.check(scenario)
            except h2load.NotOk as error:
                self.skipped[scenario.key] = f"its answer is not OK: {error}"
                self.log(f"skipping {scenario.key}: {error}")
                continue
            h2loaded.append(scenario)
        # Both floor kinds (once per repeat) and the scenarios, by h2load, interleaved.
        items: list[tuple[Scenario, str | None]] = [(s, None) for s in h2loaded]
        new_floor = (repeat, floor.key) not in self.floors
        if new_floor:
            kinds = KINDS if repeat % 2 == 0 else tuple(reversed(KINDS))
            for kind in kinds:
                self.check(floor, kind)
            items = [(floor, kind) for kind in kinds] + items
        if items:
            saturation = self.h2load_phases(items, repeat, h2load.SATURATION)
            self.h2load_phases(items, repeat, h2load.LATENCY)
            if new_floor:
                rates = {r["floor_kind"]: float(r["achieved_rps"]) for r in saturation[:2]}
                best = max(rates, key=lambda k: rates[k])
                self.floors[(repeat, floor.key)] = (best, rates[best])
                self.log(
                    f"{floor.key}: the floor is {best} ("
                    + ", ".join(f"{k} {v:,.0f} rps" for k, v in rates.items())
                    + ")"
                )
        kind, saturation_rps = self.floors[(repeat, floor.key)]
        pythons = [s for s in chosen if s.loader == PYTHON]
        if pythons and (repeat, floor.key) not in self.python_floors:
            self.python_phase(floor, repeat, CLOSED, kind)
            self.python_floors.add((repeat, floor.key))
        for scenario in pythons:
            self.python_phase(scenario, repeat, CLOSED)
        active = [s for s in chosen if s.key not in self.skipped]
        points: list[tuple[float, float | None]] = [
            (saturation_rps * f, f)
            for f in self.fractions
            if any(_measures_fraction(s, f) for s in active)
        ]
        points += [(r, None) for r in sorted({r for s in active for r in s.fixed_rates})]
        for rate, fraction in points:
            if rate <= 0:
                continue
            measured: list[tuple[Scenario, str | None]] = [(floor, kind)]
            for scenario in active:
                if fraction is None and rate not in scenario.fixed_rates:
                    continue
                if fraction is not None and not _measures_fraction(scenario, fraction):
                    continue
                measured.append((scenario, None))
            self.open_loop(measured, repeat, rate, fraction)


def _measures_fraction(scenario: Scenario, fraction: float) -> bool:
    return scenario.fractions is None or fraction in scenario.fractions


@contextlib.contextmanager
def _stopping(server: ServerProcess) -> Iterator[ServerProcess]:
    try:
        yield server
    finally:
        server.stop()
