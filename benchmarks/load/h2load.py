"""h2load (nghttp2's C load generator) against a gRPC server, for one unary method.

A Python load generator spends ~200 us of CPU per RPC on the same cores as the server it
measures; h2load spends a few. It speaks plain HTTP/2, which is enough for unary gRPC:
the body is the 5-byte gRPC frame header (flag byte 0, 4-byte big-endian length) and the
serialized request, with the headers `content-type: application/grpc` and `te: trailers`.

h2load counts every HTTP 200 as a success, but gRPC sends its errors with HTTP 200 and the
status in the trailers: `check_ok` sends the same request once with a real gRPC client and
`run` refuses to load a server whose answer is not OK. During the run, an RPC answered with
an error carries no message (no DATA frame), so the DATA bytes h2load received are compared
with the requests done times the checked answer's size: a shortfall is counted as RPCs
that failed (`short_answers`).

h2load sends one fixed request. A target may carry several (`Target.more_requests`, e.g.
distinct users, so that no two RPCs in flight share one store read): each then has its own
h2load process and connections, run side by side, and the figures are merged.

Two modes (both closed loop, `-m 1`: one RPC in flight per connection):
- `saturation`: C connections (default 8), N requests (`-n`) or a duration (`-D`);
- `latency`: 1 connection, 1 RPC in flight.

Modules: this one runs h2load (`run`, `saturation`, `latency`) and is the tool's API;
h2load_target.py holds the target and the OK check, h2load_result.py a run's figures and
`merge`, h2load_output.py reads h2load's summary and log, h2load_process.py starts the
processes and reads CPU times.

Latency percentiles are exact, from every request of h2load's `--log-file` (its text output
has min/max/mean/sd only). Server CPU per RPC is the utime+stime of the given worker pids
(/proc/PID/stat) before and after the run, divided by the requests done.

    from benchmarks.load import h2load
    target = h2load.Target("127.0.0.1", port, "/entitlements.v1.EntitlementService/"
                           "GetEntitlement", request.SerializeToString(), token=None)
    h2load.check_ok(target)
    result = h2load.saturation(target, requests=20_000, server_pids=pids)
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.load.h2load_output import (
    H2loadFailed,
    LogSamples,
    RequestTime,
    Summary,
    parse_output,
    read_log,
)
from benchmarks.load.h2load_process import (
    children_cpu_seconds,
    cpu_seconds,
    invoke_all,
    process_cpu_seconds,
)
from benchmarks.load.h2load_result import H2loadResult, latency_figures, merge
from benchmarks.load.h2load_target import NotOk, Target, check_all, check_ok, grpc_frame

# The API of the h2load tool: its runs (here), their targets and the answer check
# (h2load_target.py), their results (h2load_result.py), reading h2load's output
# (h2load_output.py), its processes and CPU times (h2load_process.py).
__all__ = [
    "DEFAULT_CONNECTIONS",
    "LATENCY",
    "SATURATION",
    "SIZE_JITTER",
    "H2loadFailed",
    "H2loadMissing",
    "H2loadResult",
    "LogSamples",
    "NotOk",
    "RequestTime",
    "Summary",
    "Target",
    "check_all",
    "check_ok",
    "cpu_seconds",
    "find_h2load",
    "grpc_frame",
    "latency",
    "merge",
    "parse_output",
    "process_cpu_seconds",
    "read_log",
    "run",
    "saturation",
]


SATURATION = "saturation"
LATENCY = "latency"
DEFAULT_CONNECTIONS = 8
# A run that takes longer than its expected time by this much is stuck: h2load is killed.
SLACK_SECONDS = 60.0
# The slowest rate a `-n` run is given time for (requests per second).
SLOWEST_RPS = 100.0
# The DATA bytes of a run may fall short of the expected by this fraction (answers of one
# request vary by a few bytes) before the shortfall counts as RPCs answered with an error.
SIZE_JITTER = 0.005


class H2loadMissing(RuntimeError):
    """h2load is not installed."""


def find_h2load() -> str:
    """The h2load executable's path."""
    found = shutil.which("h2load")
    if found is None:
        raise H2loadMissing(
            "h2load not found on PATH: install the Debian package nghttp2-client "
            "(apt-get install -y nghttp2-client, or `make bench-setup`)"
        )
    return found


def _base_command(
    executable: str, target: Target, body: Path, connections: int, in_flight: int, threads: int
) -> list[str]:
    command = [executable, "-c", str(connections), "-m", str(in_flight), "-t", str(threads)]
    command += ["-d", str(body)]
    for header in target.headers():
        command += ["-H", header]
    return command


def _split(total: int, parts: int) -> list[int]:
    """`total` split into `parts` near-equal whole shares."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run(
    target: Target,
    *,
    connections: int,
    in_flight: int = 1,
    requests: int | None = None,
    duration_s: float | None = None,
    warmup_requests: int = 0,
    server_pids: Sequence[int] = (),
    threads: int = 1,
    label: str = "",
    mode: str = "",
    check: bool = True,
    expected: Sequence[bytes] | None = None,
    log_path: Path | None = None,
) -> H2loadResult:
    """One h2load run: `connections` connections x `in_flight` RPCs each, closed loop,
    either `requests` requests in all (-n) or for `duration_s` seconds (-D).

    With several requests in the target, one h2load process per request (at most one per
    connection), the connections and requests split between them, run side by side.

    First (unless check=False) `check_all`; then, if warmup_requests, an unmeasured h2load
    run of that many; then the measured run, between two samples of the server workers'
    CPU. `expected`: the serialized answers to the target's requests (what `check_all`
    returns; with check=True, its own) for the DATA bytes check. `log_path` keeps h2load's
    per-request log there (default: a temporary file; with several processes, one file
    each, suffixed)."""
    if (requests is None) == (duration_s is None):
        raise ValueError("give exactly one of requests and duration_s")
    if requests is not None and requests < connections:
        raise ValueError("fewer requests than connections")
    plan = _Plan(connections, in_flight, requests, duration_s, warmup_requests, threads)
    executable = find_h2load()
    if check:
        expected = check_all(target)
    bodies = target.requests[:connections]
    shares = _split(connections, len(bodies))
    with tempfile.TemporaryDirectory(prefix="h2load-") as scratch:
        folder = Path(scratch)
        bases = []
        for index, (request, share) in enumerate(zip(bodies, shares, strict=True)):
            body = folder / f"body-{index}"
            body.write_bytes(grpc_frame(request))
            bases.append(_base_command(executable, target, body, share, in_flight, threads))
        if warmup_requests > 0:
            warm = [max(warmup_requests // len(bodies), share) for share in shares]
            invoke_all(
                [[*base, "-n", str(n), target.url] for base, n in zip(bases, warm, strict=True)],
                max(warm) / SLOWEST_RPS + SLACK_SECONDS,
            )
        logs = _log_paths(log_path, len(bodies), folder)
        measured = _measure(_measured_commands(target, bases, logs, plan), plan, server_pids)
        parts = [read_log(log) for log in logs]
    return _result(target, plan, label, mode, measured, parts, expected)


@dataclass(frozen=True)
class _Plan:
    """What one run sends (`run`'s arguments)."""

    connections: int
    in_flight: int
    requests: int | None
    duration_s: float | None
    warmup_requests: int
    threads: int

    def timeout_s(self) -> float:
        """How long the run may take before it counts as stuck."""
        if self.requests is not None:
            return self.requests / SLOWEST_RPS + SLACK_SECONDS
        assert self.duration_s is not None
        return self.duration_s + SLACK_SECONDS


@dataclass(frozen=True)
class _Measured:
    """The h2load processes' summaries and the CPU spent around them."""

    summaries: list[Summary]
    server_pids: tuple[int, ...]
    cpu_by_pid: tuple[float, ...]
    loader_cpu: float


def _log_paths(log_path: Path | None, processes: int, scratch: Path) -> list[Path]:
    """Where each process writes its per-request log: `log_path` for a single process,
    else one file each, suffixed (in the scratch folder by default)."""
    if log_path is not None and processes == 1:
        return [log_path]
    folder, stem = (log_path.parent, log_path.name) if log_path else (scratch, "log")
    return [folder / f"{stem}.{index}" for index in range(processes)]


def _measured_commands(
    target: Target, bases: list[list[str]], logs: list[Path], plan: _Plan
) -> list[list[str]]:
    request_shares = _split(plan.requests, len(bases)) if plan.requests is not None else None
    commands = []
    for index, base in enumerate(bases):
        command = [*base, f"--log-file={logs[index]}"]
        if request_shares is not None:
            command += ["-n", str(request_shares[index])]
        else:
            assert plan.duration_s is not None
            # h2load takes whole durations with a unit (it refuses "1.5").
            command += ["-D", f"{max(1, round(plan.duration_s * 1000))}ms"]
        commands.append([*command, target.url])
    return commands


def _measure(commands: list[list[str]], plan: _Plan, server_pids: Sequence[int]) -> _Measured:
    """Runs the commands side by side between two samples of the server workers' CPU (and
    of the CPU of this process's children: h2load)."""
    loader_before = children_cpu_seconds()
    cpu_before = [process_cpu_seconds(pid) for pid in server_pids]
    outputs = invoke_all(commands, plan.timeout_s())
    cpu_after = [process_cpu_seconds(pid) for pid in server_pids]
    loader_cpu = children_cpu_seconds() - loader_before
    by_pid = tuple(after - before for before, after in zip(cpu_before, cpu_after, strict=True))
    summaries = [parse_output(output) for output in outputs]
    return _Measured(summaries, tuple(server_pids), by_pid, loader_cpu)


def _short_answers(
    expected: Sequence[bytes] | None, summaries: list[Summary], data_bytes: int | None
) -> tuple[int | None, int]:
    """The DATA bytes expected (the checked answers times the requests done) and the RPCs
    that fell short of them: answers vary by a few bytes (timestamps' nanoseconds), an
    error has none."""
    if expected is None or data_bytes is None:
        return None, 0
    frames = [len(grpc_frame(answer)) for answer in expected[: len(summaries)]]
    expected_bytes = sum(s.done * f for s, f in zip(summaries, frames, strict=True))
    shortfall = expected_bytes - data_bytes
    if shortfall > SIZE_JITTER * expected_bytes:
        return expected_bytes, round(shortfall / (sum(frames) / len(frames)))
    return expected_bytes, 0


def _result(
    target: Target,
    plan: _Plan,
    label: str,
    mode: str,
    measured: _Measured,
    parts: list[LogSamples],
    expected: Sequence[bytes] | None,
) -> H2loadResult:
    summaries = measured.summaries
    done = sum(summary.done for summary in summaries)
    elapsed = max(summary.elapsed_s for summary in summaries)
    server_cpu = sum(measured.cpu_by_pid) if measured.server_pids else None
    durations = sorted(d for part in parts for d in part.durations_us)
    received = [summary.data_bytes for summary in summaries]
    data_bytes = None if None in received else sum(r or 0 for r in received)
    expected_bytes, short = _short_answers(expected, summaries, data_bytes)

    if plan.duration_s is not None:  # each process ran for the duration: their rates add up
        rps = sum(summary.rps for summary in summaries)
    else:
        rps = done / elapsed if elapsed else math.nan
    return H2loadResult(
        label=label,
        mode=mode,
        url=target.url,
        connections=plan.connections,
        in_flight_per_connection=plan.in_flight,
        threads=plan.threads,
        processes=len(summaries),
        requests=plan.requests,
        duration_s=plan.duration_s,
        warmup_requests=plan.warmup_requests,
        rps=rps,
        n=done,
        ok=sum(summary.succeeded for summary in summaries),
        failed=sum(summary.failed for summary in summaries),
        errored=sum(summary.errored for summary in summaries),
        timeout=sum(summary.timeout for summary in summaries),
        elapsed_s=elapsed,
        **latency_figures(durations),
        non_200=sum(part.non_200 for part in parts),
        request_time=summaries[0].request_time if len(summaries) == 1 else None,
        data_bytes=data_bytes,
        expected_data_bytes=expected_bytes,
        short_answers=short,
        server_pids=measured.server_pids,
        cpu_seconds=server_cpu,
        cpu_seconds_by_pid=measured.cpu_by_pid,
        cpu_us_per_rpc=server_cpu / done * 1e6 if server_cpu is not None and done else None,
        loader_cpu_us_per_rpc=measured.loader_cpu / done * 1e6 if done else None,
        durations_us=tuple(durations),
    )


def saturation(
    target: Target,
    *,
    connections: int = DEFAULT_CONNECTIONS,
    requests: int | None = 20_000,
    duration_s: float | None = None,
    warmup_requests: int = 0,
    server_pids: Sequence[int] = (),
    label: str = "",
    check: bool = True,
    expected: Sequence[bytes] | None = None,
) -> H2loadResult:
    """Closed-loop saturation: `connections` connections x 1 RPC in flight, `requests`
    requests (-n) or, with requests=None, `duration_s` seconds (-D)."""
    return run(
        target,
        connections=connections,
        in_flight=1,
        requests=requests,
        duration_s=duration_s,
        warmup_requests=warmup_requests,
        server_pids=server_pids,
        label=label,
        mode=SATURATION,
        check=check,
        expected=expected,
    )


def latency(
    target: Target,
    *,
    requests: int | None = 5_000,
    duration_s: float | None = None,
    warmup_requests: int = 0,
    server_pids: Sequence[int] = (),
    label: str = "",
    check: bool = True,
    expected: Sequence[bytes] | None = None,
) -> H2loadResult:
    """Unloaded latency: 1 connection, 1 RPC in flight (each request sent when the
    previous one has been answered); the target's first request only."""
    return run(
        target,
        connections=1,
        in_flight=1,
        requests=requests,
        duration_s=duration_s,
        warmup_requests=warmup_requests,
        server_pids=server_pids,
        label=label,
        mode=LATENCY,
        check=check,
        expected=expected,
    )
