"""Which empty-handler floor is faster, measured with h2load: the sync floor against the
grpc.aio + uvloop floor (`benchmarks/floor_server.py --kind sync|aio`), and optionally any
other server (e.g. a real service you started) against them. `python -m benchmarks.load`
measures both floors and the service's scenarios in every run; this tool is the quick
A/B for one already running server.

    python -m benchmarks.load.h2load_compare --workers 1 --runs 3 --n 20000
    python -m benchmarks.load.h2load_compare --workers 2 --floors aio \\
        --target 127.0.0.1:PORT --target-pids 123,124 --token TOKEN --user-id U --feature F

Both floors run side by side, each on its own free port, with the same worker count; no
data is seeded (the floors answer constants). Every run measures every server in turn
(the order rotates from run to run) with GetEntitlement:
- closed-loop saturation: h2load, 8 connections x 1 RPC in flight, --n requests;
- unloaded latency: 1 connection x 1 RPC in flight, --latency-n requests.
Each server's answer is first checked with a real gRPC client (status OK, a response that
parses); the figures are the medians of the runs: requests/s, server CPU per RPC (its
worker pids' utime+stime), exact p50/p99 from h2load's per-request log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.floor_server import ENTITLEMENT_FEATURE, ENTITLEMENT_USER, KINDS
from benchmarks.load import h2load
from benchmarks.load.servers import ServerFailed, ServerProcess
from benchmarks.load.servers import start_floor as start_floor_server

GET_ENTITLEMENT = "/entitlements.v1.EntitlementService/GetEntitlement"
# The request the floors get (they do not read it): a benchmark user as benchmarks.data
# names them (block 0, active), and a feature of the catalog.
FLOOR_USER = ENTITLEMENT_USER
FLOOR_FEATURE = ENTITLEMENT_FEATURE
WARMUP_REQUESTS = 2_000
# Median throughputs closer than this are a tie (runs here vary by 10-40%).
RPS_TIE = 0.10
CPU_TIE = 0.10


@dataclass
class Measured:
    """One server under test and its results over the runs."""

    name: str
    target: h2load.Target
    pids: tuple[int, ...]
    floor: bool
    saturation: list[h2load.H2loadResult] = field(default_factory=list)
    latency: list[h2load.H2loadResult] = field(default_factory=list)


def get_entitlement_request(user_id: str, feature_id: str) -> bytes:
    from entitlements.v1 import entitlement_service_pb2

    request = entitlement_service_pb2.GetEntitlementRequest(user_id=user_id, feature_id=feature_id)
    return request.SerializeToString()


def _parse_response(data: bytes) -> object:
    from entitlements.v1 import entitlement_service_pb2

    return entitlement_service_pb2.GetEntitlementResponse.FromString(data)


def start_floor(kind: str, workers: int, log_path: Path) -> ServerProcess:
    """Starts `python -m benchmarks.floor_server --kind KIND --workers N --port 0` and waits
    for its banner (port and worker pids)."""
    return start_floor_server(kind, workers, {}, log_path, name=f"{kind} floor")


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summary(measured: Measured) -> dict[str, Any]:
    """Medians over the runs of one server's figures."""

    def med(results: list[h2load.H2loadResult], key: Callable[[Any], float | None]) -> Any:
        return _median([key(r) for r in results])

    sat, lat = measured.saturation, measured.latency
    return {
        "name": measured.name,
        "floor": measured.floor,
        "runs": len(sat),
        "rps": med(sat, lambda r: r.rps),
        "rps_runs": [round(r.rps) for r in sat],
        "cpu_us_per_rpc": med(sat, lambda r: r.cpu_us_per_rpc),
        "cpu_us_per_rpc_runs": [round(r.cpu_us_per_rpc or 0) for r in sat],
        "loader_cpu_us_per_rpc": med(sat, lambda r: r.loader_cpu_us_per_rpc),
        "p50_ms": med(sat, lambda r: r.p50_ms),
        "p99_ms": med(sat, lambda r: r.p99_ms),
        "latency_rps": med(lat, lambda r: r.rps),
        "latency_p50_ms": med(lat, lambda r: r.p50_ms),
        "latency_p99_ms": med(lat, lambda r: r.p99_ms),
        "latency_p999_ms": med(lat, lambda r: r.p999_ms),
        "latency_cpu_us_per_rpc": med(lat, lambda r: r.cpu_us_per_rpc),
        "not_ok": sum(r.failed + r.errored + r.timeout + r.non_200 for r in [*sat, *lat]),
    }


def _spread(result: h2load.H2loadResult) -> str:
    """The workers' shares of the server CPU, when there are several."""
    total = sum(result.cpu_seconds_by_pid)
    if len(result.cpu_seconds_by_pid) < 2 or total <= 0:
        return ""
    return " (CPU split " + "/".join(f"{c / total:.0%}" for c in result.cpu_seconds_by_pid) + ")"


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| server | rps | CPU us/RPC | p50 ms | p99 ms | 1-in-flight p50 ms | p99 ms "
        "| p99.9 ms | CPU us/RPC | rps (runs) | CPU us/RPC (runs) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    lines.extend(
        f"| {row['name']} | {_fmt(row['rps'])} | {_fmt(row['cpu_us_per_rpc'])} "
        f"| {_fmt(row['p50_ms'], 2)} | {_fmt(row['p99_ms'], 2)} "
        f"| {_fmt(row['latency_p50_ms'], 3)} | {_fmt(row['latency_p99_ms'], 3)} "
        f"| {_fmt(row['latency_p999_ms'], 3)} | {_fmt(row['latency_cpu_us_per_rpc'])} "
        f"| {', '.join(f'{v:,}' for v in row['rps_runs'])} "
        f"| {', '.join(str(v) for v in row['cpu_us_per_rpc_runs'])} |"
        for row in rows
    )
    return "\n".join(lines)


def best_floor(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], str] | None:
    """The better floor and why: the highest median saturation throughput when it leads
    by more than RPS_TIE (run-to-run noise here is 10-40%); within that, the lower median
    server CPU per RPC when it is lower by more than CPU_TIE; otherwise a tie, named by
    throughput and reported as a tie."""
    floors = sorted(
        (row for row in rows if row["floor"] and row["rps"] is not None),
        key=lambda row: row["rps"],
        reverse=True,
    )
    if not floors:
        return None
    if len(floors) == 1:
        return floors[0], "the only floor"
    first, second = floors[0], floors[1]
    ratio = first["rps"] / second["rps"]
    if ratio >= 1 + RPS_TIE:
        return first, f"median rps {ratio:.2f}x"
    cpu = (first["cpu_us_per_rpc"], second["cpu_us_per_rpc"])
    if cpu[0] is not None and cpu[1] is not None:
        if cpu[1] * (1 + CPU_TIE) < cpu[0]:
            return second, f"median rps within {RPS_TIE:.0%}, CPU per RPC {cpu[0] / cpu[1]:.2f}x"
        if cpu[0] * (1 + CPU_TIE) < cpu[1]:
            return first, f"median rps {ratio:.2f}x, CPU per RPC {cpu[1] / cpu[0]:.2f}x lower"
    return first, (
        f"a TIE: median rps {ratio:.2f}x and CPU per RPC within "
        f"{max(RPS_TIE, CPU_TIE):.0%}, no floor is better beyond the noise"
    )


def _pids(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.replace(",", " ").split())


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    return host.strip("[]"), int(port)


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load.h2load_compare",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes per floor")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n", type=int, default=20_000, help="requests per saturation run")
    parser.add_argument("--latency-n", type=int, default=5_000, help="requests per 1-in-flight run")
    parser.add_argument("--connections", type=int, default=h2load.DEFAULT_CONNECTIONS)
    parser.add_argument(
        "--warmup", type=int, default=WARMUP_REQUESTS, help="unmeasured requests, first run"
    )
    parser.add_argument("--floors", default="sync,aio", help="floors to run: sync, aio")
    parser.add_argument("--target", type=_host_port, help="another server, HOST:PORT")
    parser.add_argument("--target-pids", type=_pids, default=(), help="its worker pids")
    parser.add_argument("--target-name", default="target")
    parser.add_argument("--token", help="bearer token for --target")
    parser.add_argument("--user-id", default=FLOOR_USER, help="GetEntitlement user for --target")
    parser.add_argument("--feature", default=FLOOR_FEATURE, help="its feature_id")
    parser.add_argument("--json", type=Path, help="write every result and the medians here")
    parser.add_argument("--log-dir", type=Path, help="keep the floors' logs here")
    args = parser.parse_args(argv)
    floors = [f for f in args.floors.split(",") if f]
    unknown = set(floors) - set(KINDS)
    if unknown:
        parser.error(f"unknown floors: {', '.join(sorted(unknown))}")
    args.floor_kinds = floors
    if args.target and not args.target_pids:
        parser.error("--target needs --target-pids (its worker processes, for CPU per RPC)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        return compare(args)
    except (h2load.H2loadMissing, h2load.NotOk, h2load.H2loadFailed, ServerFailed) as error:
        print(f"h2load_compare: {error}", file=sys.stderr)
        return 2


def compare(args: argparse.Namespace) -> int:
    """Runs the comparison `main` parsed the arguments of; returns the exit status."""
    h2load.find_h2load()
    extra: list[Measured] = []
    if args.target:
        host, port = args.target
        request = get_entitlement_request(args.user_id, args.feature)
        target = h2load.Target(host, port, GET_ENTITLEMENT, request, args.token)
        h2load.check_ok(target, parse=_parse_response)  # before starting anything
        extra.append(Measured(args.target_name, target, args.target_pids, floor=False))

    with contextlib.ExitStack() as stack:
        logs = args.log_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        logs.mkdir(parents=True, exist_ok=True)
        floor_request = get_entitlement_request(FLOOR_USER, FLOOR_FEATURE)
        floors: list[Measured] = []
        for kind in args.floor_kinds:
            server = start_floor(kind, args.workers, logs / f"{kind}_floor.log")
            stack.callback(server.stop)
            target = h2load.Target(server.host, server.port, GET_ENTITLEMENT, floor_request)
            floors.append(Measured(f"{kind} floor", target, server.worker_pids, floor=True))
            print(f"{server.name}: {target.authority}, pids {server.worker_pids}", flush=True)
        measured = floors + extra
        for item in measured:
            h2load.check_ok(item.target, parse=_parse_response)

        print(
            f"workers {args.workers}; saturation: h2load {args.connections} connections x 1 "
            f"in flight, {args.n} requests; latency: 1 connection x 1 in flight, "
            f"{args.latency_n} requests; {args.runs} runs",
            flush=True,
        )
        for run in range(args.runs):
            order = measured[run % len(measured) :] + measured[: run % len(measured)]
            for item in order:
                sat = h2load.saturation(
                    item.target,
                    connections=args.connections,
                    requests=args.n,
                    warmup_requests=args.warmup if run == 0 else 0,
                    server_pids=item.pids,
                    label=item.name,
                    check=False,
                )
                lat = h2load.latency(
                    item.target,
                    requests=args.latency_n,
                    server_pids=item.pids,
                    label=item.name,
                    check=False,
                )
                item.saturation.append(sat)
                item.latency.append(lat)
                print(
                    f"run {run + 1} {item.name}: {sat.rps:,.0f} rps, "
                    f"{_fmt(sat.cpu_us_per_rpc)} us CPU/RPC, p50 {sat.p50_ms:.2f} ms, "
                    f"p99 {sat.p99_ms:.2f} ms; 1 in flight: p50 {lat.p50_ms:.3f} ms, "
                    f"p99 {lat.p99_ms:.3f} ms, {_fmt(lat.cpu_us_per_rpc)} us CPU/RPC"
                    + _spread(sat)
                    + ("" if sat.failed + sat.errored + sat.non_200 == 0 else " (FAILURES)"),
                    flush=True,
                )

    rows = [summary(item) for item in measured]
    print(f"\nmedians of {args.runs} runs (saturation, then 1 in flight):\n{table(rows)}")
    decided = best_floor(rows)
    best = decided[0] if decided else None
    if decided is not None and best is not None:
        versus = "".join(
            f"; {r['name']}: {_fmt(best['rps'])} vs {_fmt(r['rps'])} rps, "
            f"{_fmt(best['cpu_us_per_rpc'])} vs {_fmt(r['cpu_us_per_rpc'])} us CPU/RPC"
            for r in rows
            if r["floor"] and r is not best
        )
        print(f"better floor: {best['name']} ({decided[1]}){versus}")
        for row in rows:
            if not row["floor"] and row["rps"] and best["rps"]:
                print(
                    f"{row['name']}: {row['rps'] / best['rps']:.2f} of the {best['name']}'s "
                    f"rps, {_fmt(row['cpu_us_per_rpc'])} vs {_fmt(best['cpu_us_per_rpc'])} "
                    "us CPU/RPC"
                )
    if args.json:
        document = {
            "workers": args.workers,
            "runs": args.runs,
            "summary": rows,
            "better_floor": best["name"] if best else None,
            "better_floor_reason": decided[1] if decided else None,
            "results": [
                {"name": m.name, "saturation": [r.as_dict() for r in m.saturation],
                 "latency": [r.as_dict() for r in m.latency]}
                for m in measured
            ],
        }  # fmt: skip
        args.json.write_text(json.dumps(document, indent=2))
    failures = sum(row["not_ok"] for row in rows)
    if failures:
        print(f"{failures} requests failed or were not HTTP 200", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
