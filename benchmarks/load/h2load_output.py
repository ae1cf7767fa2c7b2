"""Reading h2load's output: its text summary (`parse_output`) and its per-request log
(`read_log`), from which the latency percentiles are exact."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# h2load marks a stream that failed (reset, connection lost) with this status in its log.
FAILED_STATUS = -1


class H2loadFailed(RuntimeError):
    """h2load exited with an error, timed out, or printed no summary."""


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
