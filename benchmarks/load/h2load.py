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

import contextlib
import dataclasses
import math
import os
import re
import resource
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.load.stats import percentile

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SATURATION = "saturation"
LATENCY = "latency"
DEFAULT_CONNECTIONS = 8
# h2load marks a stream that failed (reset, connection lost) with this status in its log.
FAILED_STATUS = -1
# A run that takes longer than its expected time by this much is stuck: h2load is killed.
SLACK_SECONDS = 60.0
# The slowest rate a `-n` run is given time for (requests per second).
SLOWEST_RPS = 100.0
# The DATA bytes of a run may fall short of the expected by this fraction (answers of one
# request vary by a few bytes) before the shortfall counts as RPCs answered with an error.
SIZE_JITTER = 0.005


class H2loadMissing(RuntimeError):
    """h2load is not installed."""


class H2loadFailed(RuntimeError):
    """h2load exited with an error, timed out, or printed no summary."""


class NotOk(RuntimeError):
    """The server's answer to the request is not gRPC status OK: no load is sent."""


@dataclass(frozen=True)
class Target:
    """A unary method of a gRPC server and the request h2load sends to it."""

    host: str
    port: int
    # "/package.Service/Method" (the leading slash is optional).
    method: str
    # The serialized request message (without the gRPC frame header).
    request: bytes
    # Sent as `authorization: Bearer TOKEN` when set.
    token: str | None = None
    # Other requests, each sent by its own h2load process over its own connections.
    more_requests: tuple[bytes, ...] = ()

    @property
    def requests(self) -> tuple[bytes, ...]:
        return (self.request, *self.more_requests)

    @property
    def path(self) -> str:
        return self.method if self.method.startswith("/") else "/" + self.method

    @property
    def authority(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.authority}{self.path}"

    def headers(self) -> list[str]:
        headers = ["content-type: application/grpc", "te: trailers"]
        if self.token:
            headers.append(f"authorization: Bearer {self.token}")
        return headers

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


@dataclass(frozen=True)
class RequestTime:
    """h2load's own `time for request` line, in milliseconds."""

    min_ms: float
    max_ms: float
    mean_ms: float
    sd_ms: float


@dataclass(frozen=True)
class Summary:
    """What h2load prints at the end of a run."""

    elapsed_s: float
    rps: float
    total: int
    started: int
    done: int
    succeeded: int
    failed: int
    errored: int
    timeout: int
    status_2xx: int
    request_time: RequestTime | None
    # Bytes of DATA frames received (the gRPC messages with their 5-byte headers).
    data_bytes: int | None = None


@dataclass(frozen=True)
class LogSamples:
    """h2load's per-request log: the response times (us) of the requests that got an
    HTTP status, sorted, and how many had a status other than 200 or none (-1)."""

    durations_us: list[int]
    non_200: int
    failed_streams: int


@dataclass(frozen=True)
class H2loadResult:
    label: str
    mode: str
    url: str
    # Connection settings: connections x RPCs in flight per connection, h2load threads.
    connections: int
    in_flight_per_connection: int
    threads: int
    # h2load processes run side by side (one per distinct request of the target).
    processes: int
    requests: int | None
    duration_s: float | None
    warmup_requests: int
    # h2load's summary: requests/s over its measurement time, and its counts. `ok` is
    # h2load's "succeeded" (HTTP 2xx); gRPC status was checked once before the run.
    rps: float
    n: int
    ok: int
    failed: int
    errored: int
    timeout: int
    elapsed_s: float
    # Exact nearest-rank percentiles from every logged request (ms).
    samples: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    non_200: int
    request_time: RequestTime | None
    # DATA bytes received, the bytes the requests done would bring if every answer were
    # the checked one (None: not checked), and the RPCs that shortfall stands for.
    data_bytes: int | None
    expected_data_bytes: int | None
    short_answers: int
    # Server CPU (utime + stime of server_pids) over the run, and per request done.
    server_pids: tuple[int, ...]
    cpu_seconds: float | None
    # The same per pid (with several workers: how evenly the connections spread).
    cpu_seconds_by_pid: tuple[float, ...]
    cpu_us_per_rpc: float | None
    # h2load's own CPU per request (getrusage of waited-for children).
    loader_cpu_us_per_rpc: float | None
    # Every logged request's duration (us), sorted: for merging slices (not in as_dict).
    durations_us: tuple[int, ...] = dataclasses.field(default=(), repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        del fields["durations_us"]
        return fields

    @property
    def not_ok(self) -> int:
        """Requests that did not end in a gRPC answer as checked: failed, errored, timed
        out, not HTTP 200, or answered without the message (a gRPC error status)."""
        return self.failed + self.errored + self.timeout + self.non_200 + self.short_answers


def find_h2load() -> str:
    """The h2load executable's path."""
    found = shutil.which("h2load")
    if found is None:
        raise H2loadMissing(
            "h2load not found on PATH: install the Debian package nghttp2-client "
            "(apt-get install -y nghttp2-client, or `make bench-setup`)"
        )
    return found


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: uncompressed flag 0, 4-byte big-endian length."""
    return struct.pack(">BI", 0, len(message)) + message


def check_ok(
    target: Target,
    timeout_s: float = 5.0,
    parse: Callable[[bytes], object] | None = None,
) -> bytes:
    """Sends the target's request once with a real gRPC client (raw bytes in and out)
    and returns the serialized response; raises NotOk unless the status is OK (and, with
    `parse`, unless parse(response) succeeds, e.g. `GetEntitlementResponse.FromString`)."""
    import grpc

    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(target.authority, options=options) as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            target.path, request_serializer=None, response_deserializer=None
        )
        try:
            response = call(target.request, timeout=timeout_s, metadata=target.metadata())
        except grpc.RpcError as error:
            if isinstance(error, grpc.Call):
                raise NotOk(
                    f"{target.url}: {error.code().name} ({error.details()}): not loading"
                ) from error
            raise NotOk(f"{target.url}: {error!r}: not loading") from error
    if not isinstance(response, bytes):
        raise NotOk(f"{target.url}: the response is {type(response).__name__}, not bytes")
    if parse is not None:
        try:
            parse(response)
        except Exception as error:
            raise NotOk(f"{target.url}: the response does not parse: {error!r}") from error
    return response


def check_all(
    target: Target,
    timeout_s: float = 5.0,
    parse: Callable[[bytes], object] | None = None,
) -> list[bytes]:
    """`check_ok` for each of the target's requests; their serialized responses."""
    return [
        check_ok(dataclasses.replace(target, request=request, more_requests=()), timeout_s, parse)
        for request in target.requests
    ]


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (raises OSError when it is gone)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # After "pid (comm)": state is field 0, utime field 11, stime field 12 (clock ticks).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of all the processes, in seconds."""
    return sum(process_cpu_seconds(pid) for pid in pids)


_DURATION = re.compile(r"([\d.]+)(us|ms|s)")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_FINISHED = re.compile(r"finished in ([\d.]+(?:us|ms|s)), ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx")
_DATA = re.compile(r"traffic: .*\((\d+)\) data")
_REQUEST_TIME = re.compile(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)")


def _ms(text: str) -> float:
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"not an h2load duration: {text!r}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_output(text: str) -> Summary:
    """Parses h2load's summary (stdout). Durations come as e.g. 376us, 10.49ms, 1.02s."""
    finished = _FINISHED.search(text)
    counts = _REQUESTS.search(text)
    if finished is None or counts is None:
        raise H2loadFailed(f"no summary in h2load's output:\n{text[-2000:]}")
    status = _STATUS.search(text)
    timing = _REQUEST_TIME.search(text)
    request_time = None
    if timing is not None:
        low, high, mean, sd = (_ms(timing.group(i)) for i in range(1, 5))
        request_time = RequestTime(low, high, mean, sd)
    total, started, done, succeeded, failed, errored, timeout = (
        int(counts.group(i)) for i in range(1, 8)
    )
    return Summary(
        elapsed_s=_ms(finished.group(1)) / 1000.0,
        rps=float(finished.group(2)),
        total=total,
        started=started,
        done=done,
        succeeded=succeeded,
        failed=failed,
        errored=errored,
        timeout=timeout,
        status_2xx=int(status.group(1)) if status else 0,
        request_time=request_time,
        data_bytes=int(data.group(1)) if (data := _DATA.search(text)) else None,
    )


def read_log(path: Path) -> LogSamples:
    """h2load's --log-file: one tab-separated row per request: start (us since the epoch),
    HTTP status (-1: the stream failed), microseconds until the end of the response."""
    durations: list[int] = []
    non_200 = failed = 0
    with open(path) as handle:
        for line in handle:
            columns = line.split("\t")
            if len(columns) < 3:
                continue
            status = int(columns[1])
            if status == FAILED_STATUS:
                failed += 1
                non_200 += 1
                continue
            if status != 200:
                non_200 += 1
            durations.append(int(columns[2]))
    durations.sort()
    return LogSamples(durations, non_200, failed)


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _invoke_all(commands: Sequence[list[str]], timeout_s: float) -> list[str]:
    """Runs the h2load commands side by side; their outputs (stdout and stderr)."""
    with contextlib.ExitStack() as stack:
        started: list[tuple[subprocess.Popen[str], Any, Any]] = []
        for command in commands:
            out = stack.enter_context(tempfile.TemporaryFile("w+"))
            err = stack.enter_context(tempfile.TemporaryFile("w+"))
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, text=True
            )
            started.append((process, out, err))
        deadline = time.monotonic() + timeout_s
        outputs = []
        try:
            for process, out, err in started:
                try:
                    code = process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired as error:
                    raise H2loadFailed(
                        f"h2load took more than {timeout_s:.0f} s: {process.args!r}"
                    ) from error
                out.seek(0)
                err.seek(0)
                output = out.read() + err.read()
                if code != 0:
                    raise H2loadFailed(f"h2load exited {code}:\n{output[-2000:]}")
                outputs.append(output)
        finally:
            for process, _out, _err in started:  # only the processes started here
                if process.poll() is None:
                    process.kill()
                    process.wait(5)
        return outputs


def _invoke(command: list[str], timeout_s: float) -> str:
    return _invoke_all([command], timeout_s)[0]


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
    executable = find_h2load()
    if check:
        expected = check_all(target)
    bodies = target.requests[:connections]
    shares = _split(connections, len(bodies))
    request_shares = _split(requests, len(bodies)) if requests is not None else None
    with tempfile.TemporaryDirectory(prefix="h2load-") as scratch:
        bases = []
        for index, (request, share) in enumerate(zip(bodies, shares, strict=True)):
            body = Path(scratch) / f"body-{index}"
            body.write_bytes(grpc_frame(request))
            bases.append(_base_command(executable, target, body, share, in_flight, threads))
        if warmup_requests > 0:
            warm = [max(warmup_requests // len(bodies), share) for share in shares]
            _invoke_all(
                [[*base, "-n", str(n), target.url] for base, n in zip(bases, warm, strict=True)],
                max(warm) / SLOWEST_RPS + SLACK_SECONDS,
            )
        if log_path is not None and len(bodies) == 1:
            logs = [log_path]
        else:
            folder, stem = (log_path.parent, log_path.name) if log_path else (Path(scratch), "log")
            logs = [folder / f"{stem}.{index}" for index in range(len(bodies))]
        commands = []
        for index, base in enumerate(bases):
            command = [*base, f"--log-file={logs[index]}"]
            if request_shares is not None:
                command += ["-n", str(request_shares[index])]
            else:
                assert duration_s is not None
                # h2load takes whole durations with a unit (it refuses "1.5").
                command += ["-D", f"{max(1, round(duration_s * 1000))}ms"]
            commands.append([*command, target.url])
        if requests is not None:
            timeout_s = requests / SLOWEST_RPS + SLACK_SECONDS
        else:
            assert duration_s is not None
            timeout_s = duration_s + SLACK_SECONDS

        loader_before = _children_cpu_seconds()
        cpu_before = [process_cpu_seconds(pid) for pid in server_pids]
        outputs = _invoke_all(commands, timeout_s)
        cpu_after = [process_cpu_seconds(pid) for pid in server_pids]
        loader_cpu = _children_cpu_seconds() - loader_before
        summaries = [parse_output(output) for output in outputs]
        parts = [read_log(log) for log in logs]

    done = sum(summary.done for summary in summaries)
    elapsed = max(summary.elapsed_s for summary in summaries)
    by_pid = tuple(after - before for before, after in zip(cpu_before, cpu_after, strict=True))
    server_cpu = sum(by_pid) if server_pids else None
    durations = sorted(d for part in parts for d in part.durations_us)
    received = [summary.data_bytes for summary in summaries]
    data_bytes = None if None in received else sum(r or 0 for r in received)
    expected_bytes = None
    short = 0
    if expected is not None and data_bytes is not None:
        frames = [len(grpc_frame(answer)) for answer in expected[: len(bodies)]]
        expected_bytes = sum(s.done * f for s, f in zip(summaries, frames, strict=True))
        shortfall = expected_bytes - data_bytes
        # Answers vary by a few bytes (timestamps' nanoseconds); an error has none.
        if shortfall > SIZE_JITTER * expected_bytes:
            short = round(shortfall / (sum(frames) / len(frames)))

    def ms(p: float) -> float:
        return percentile(durations, p) / 1000.0

    request_time = summaries[0].request_time if len(summaries) == 1 else None
    if duration_s is not None:  # each process ran for the duration: their rates add up
        rps = sum(summary.rps for summary in summaries)
    else:
        rps = done / elapsed if elapsed else math.nan
    return H2loadResult(
        label=label,
        mode=mode,
        url=target.url,
        connections=connections,
        in_flight_per_connection=in_flight,
        threads=threads,
        processes=len(bodies),
        requests=requests,
        duration_s=duration_s,
        warmup_requests=warmup_requests,
        rps=rps,
        n=done,
        ok=sum(summary.succeeded for summary in summaries),
        failed=sum(summary.failed for summary in summaries),
        errored=sum(summary.errored for summary in summaries),
        timeout=sum(summary.timeout for summary in summaries),
        elapsed_s=elapsed,
        samples=len(durations),
        p50_ms=ms(50.0),
        p90_ms=ms(90.0),
        p99_ms=ms(99.0),
        p999_ms=ms(99.9),
        max_ms=durations[-1] / 1000.0 if durations else math.nan,
        mean_ms=sum(durations) / len(durations) / 1000.0 if durations else math.nan,
        non_200=sum(part.non_200 for part in parts),
        request_time=request_time,
        data_bytes=data_bytes,
        expected_data_bytes=expected_bytes,
        short_answers=short,
        server_pids=tuple(server_pids),
        cpu_seconds=server_cpu,
        cpu_seconds_by_pid=by_pid,
        cpu_us_per_rpc=server_cpu / done * 1e6 if server_cpu is not None and done else None,
        loader_cpu_us_per_rpc=loader_cpu / done * 1e6 if done else None,
        durations_us=tuple(durations),
    )


def merge(results: Sequence[H2loadResult]) -> H2loadResult:
    """Runs of one target (e.g. slices interleaved with other servers' runs) as one: the
    requests and times add up (rps = requests done / time run), latency percentiles come
    from all their requests, server CPU per RPC from all their CPU."""
    if not results:
        raise ValueError("nothing to merge")
    if len(results) == 1:
        return results[0]
    first = results[0]
    done = sum(r.n for r in results)
    elapsed = sum(r.elapsed_s for r in results)
    durations = sorted(d for r in results for d in r.durations_us)
    cpu = [r.cpu_seconds for r in results]
    server_cpu = None if None in cpu else sum(c or 0.0 for c in cpu)
    loader = [r.loader_cpu_us_per_rpc for r in results]
    loader_cpu = None  # in CPU microseconds
    if None not in loader:
        loader_cpu = sum((r.loader_cpu_us_per_rpc or 0.0) * r.n for r in results)
    data = [r.data_bytes for r in results]
    expected = [r.expected_data_bytes for r in results]

    def ms(p: float) -> float:
        return percentile(durations, p) / 1000.0

    return dataclasses.replace(
        first,
        requests=None if first.requests is None else sum(r.requests or 0 for r in results),
        duration_s=None if first.duration_s is None else sum(r.duration_s or 0 for r in results),
        rps=done / elapsed if elapsed else math.nan,
        n=done,
        ok=sum(r.ok for r in results),
        failed=sum(r.failed for r in results),
        errored=sum(r.errored for r in results),
        timeout=sum(r.timeout for r in results),
        elapsed_s=elapsed,
        samples=len(durations),
        p50_ms=ms(50.0),
        p90_ms=ms(90.0),
        p99_ms=ms(99.0),
        p999_ms=ms(99.9),
        max_ms=durations[-1] / 1000.0 if durations else math.nan,
        mean_ms=sum(durations) / len(durations) / 1000.0 if durations else math.nan,
        non_200=sum(r.non_200 for r in results),
        request_time=None,
        data_bytes=None if None in data else sum(d or 0 for d in data),
        expected_data_bytes=None if None in expected else sum(e or 0 for e in expected),
        short_answers=sum(r.short_answers for r in results),
        cpu_seconds=server_cpu,
        cpu_seconds_by_pid=tuple(
            sum(column) for column in zip(*(r.cpu_seconds_by_pid for r in results), strict=True)
        ),
        cpu_us_per_rpc=server_cpu / done * 1e6 if server_cpu is not None and done else None,
        loader_cpu_us_per_rpc=loader_cpu / done if loader_cpu is not None and done else None,
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
