"""A steady background read load on the server while freshness is measured.

h2load (benchmarks/load/h2load.py: the C loader, Debian nghttp2-client) sends the load
tool's cache-hit GetEntitlement at a fixed rate (`--rps` per connection; it sends in
100 ms bursts, which is fine for a background load), in segments of SEGMENT_SECONDS run
back to back until stopped, so each segment's summary (requests done, HTTP 2xx, DATA
bytes) is kept. The request is first sent once by a real gRPC client (status OK and the
right answer); during the load, answers shorter than the checked one count as errors
(gRPC errors travel with HTTP 200). Without h2load, Python threads send the same request
at the same rate (they cost ~200 us of CPU per RPC on the same cores: the report says
which loader ran).
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from benchmarks.load import fixed, h2load
from benchmarks.load.scenarios import SCENARIOS

SEGMENT_SECONDS = 5
H2LOAD = "h2load"
PYTHON = "python threads"
PYTHON_THREADS = 8


@dataclass
class LoadTally:
    loader: str
    rate_rps: float
    connections: int
    seconds: float = 0.0
    done: int = 0
    not_ok: int = 0
    segments: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "loader": self.loader,
            "target_rps": round(self.rate_rps, 1),
            "connections": self.connections,
            "seconds": round(self.seconds, 1),
            "requests_done": self.done,
            "achieved_rps": round(self.done / self.seconds, 1) if self.seconds else None,
            "not_ok": self.not_ok,
            "segments": self.segments,
            "errors": self.errors[:5],
        }


def cache_hit_target(host: str, port: int, connections: int) -> h2load.Target:
    """The load tool's cache-hit GetEntitlement request (one seeded, cached user)."""
    return fixed.target(SCENARIOS["get_hit"], host, port, connections)


def checked_answer(target: h2load.Target, patience_seconds: float = 0.0) -> bytes:
    """The serialized answer of a real gRPC client: raises h2load.NotOk unless OK (tried
    again for up to `patience_seconds`: a worker's first store call on the emulator can
    outlast the store budget while it opens its session)."""
    deadline = time.monotonic() + patience_seconds
    while True:
        try:
            return h2load.check_ok(target, parse=fixed.checker(SCENARIOS["get_hit"]))
        except h2load.NotOk:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def saturation_rps(
    target: h2load.Target, pids: tuple[int, ...], seconds: float, connections: int
) -> float:
    """The server's closed-loop h2load saturation on the cache-hit request (a short run:
    to set the background rate, not a figure of the report's)."""
    result = h2load.saturation(
        target,
        connections=connections,
        requests=None,
        duration_s=seconds,
        warmup_requests=500,
        server_pids=pids,
    )
    return result.rps


@contextlib.contextmanager
def steady_load(target: h2load.Target, rate_rps: float, connections: int) -> Iterator[LoadTally]:
    """Sends the target's request at `rate_rps` over `connections` until the block ends."""
    answer = checked_answer(target)
    try:
        executable = h2load.find_h2load()
    except h2load.H2loadMissing:
        executable = None
    tally = LoadTally(H2LOAD if executable else PYTHON, rate_rps, connections)
    stop = threading.Event()
    if executable:
        runner = threading.Thread(
            target=_h2load_segments, args=(executable, target, answer, tally, stop), daemon=True
        )
    else:
        runner = threading.Thread(target=_python_load, args=(target, tally, stop), daemon=True)
    runner.start()
    try:
        yield tally
    finally:
        stop.set()
        runner.join(SEGMENT_SECONDS + 30)


def _h2load_segments(
    executable: str, target: h2load.Target, answer: bytes, tally: LoadTally, stop: threading.Event
) -> None:
    per_connection = max(1, round(tally.rate_rps / tally.connections))
    frame_bytes = len(h2load.grpc_frame(answer))
    with tempfile.TemporaryDirectory(prefix="freshness-load-") as scratch:
        body = Path(scratch) / "body"
        body.write_bytes(h2load.grpc_frame(target.request))
        command = [executable, "-c", str(tally.connections), "-m", "1", "-t", "1"]
        command += ["--rps", str(per_connection), "-d", str(body)]
        for header in target.headers():
            command += ["-H", header]
        command += ["-D", f"{SEGMENT_SECONDS}s", target.url]
        while not stop.is_set():
            began = time.monotonic()
            try:
                output = subprocess.run(
                    command, capture_output=True, text=True, timeout=SEGMENT_SECONDS + 60
                )
                summary = h2load.parse_output(output.stdout + output.stderr)
            except (subprocess.TimeoutExpired, h2load.H2loadFailed, OSError) as error:
                tally.errors.append(f"{type(error).__name__}: {error}"[:300])
                time.sleep(0.5)
                continue
            tally.seconds += time.monotonic() - began
            tally.segments += 1
            tally.done += summary.done
            short = 0
            if summary.data_bytes is not None:
                shortfall = summary.done * frame_bytes - summary.data_bytes
                if shortfall > h2load.SIZE_JITTER * summary.done * frame_bytes:
                    short = round(shortfall / frame_bytes)
            tally.not_ok += summary.done - summary.status_2xx + summary.failed + short


def _python_load(target: h2load.Target, tally: LoadTally, stop: threading.Event) -> None:
    tally.connections = PYTHON_THREADS
    interval = PYTHON_THREADS / tally.rate_rps
    lock = threading.Lock()

    def sender() -> None:
        with grpc.insecure_channel(
            target.authority, options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(target.path)
            due = time.monotonic()
            while not stop.is_set():
                try:
                    call(target.request, timeout=5, metadata=target.metadata())
                    ok = True
                except grpc.RpcError:
                    ok = False
                with lock:
                    tally.done += 1
                    tally.not_ok += 0 if ok else 1
                due += interval
                time.sleep(max(0.0, due - time.monotonic()))

    began = time.monotonic()
    threads = [threading.Thread(target=sender, daemon=True) for _ in range(PYTHON_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tally.seconds = time.monotonic() - began
    tally.segments = 1
