"""The figures of an h2load run (`H2loadResult`), and several runs of one target merged
into one (`merge`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.load.h2load_output import (
    RequestTime,
)
from benchmarks.load.stats import percentile


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


def latency_figures(durations: list[int]) -> dict[str, Any]:
    """The latency fields of an H2loadResult from its sorted per-request durations (us)."""

    def ms(p: float) -> float:
        return percentile(durations, p) / 1000.0

    return {
        "samples": len(durations),
        "p50_ms": ms(50.0),
        "p90_ms": ms(90.0),
        "p99_ms": ms(99.0),
        "p999_ms": ms(99.9),
        "max_ms": durations[-1] / 1000.0 if durations else math.nan,
        "mean_ms": sum(durations) / len(durations) / 1000.0 if durations else math.nan,
    }


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
        **latency_figures(durations),
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
