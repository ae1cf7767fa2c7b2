"""Runs phases: hands a Phase to every generator process, starts them together, samples
the server's and the machine's CPU over the measured window, merges the answers. Several
runs of one phase (slices interleaved with other servers' runs) can be pooled into one
record: their samples merged, their times and CPU added up."""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from array import array
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from benchmarks.load.generator import generator_main
from benchmarks.load.plan import CLOSED, GeneratorResult, Phase
from benchmarks.load.servers import ServerProcess, machine_cpu
from benchmarks.load.stats import summarize_ns

START_DELAY_SECONDS = 0.3
SETUP_TIMEOUT_SECONDS = 120.0


class GeneratorFailed(RuntimeError):
    pass


@dataclass
class RawPhase:
    """One run of a phase: every generator's answer and the CPU sampled around it."""

    results: list[GeneratorResult]
    server_cpu: float
    machine_busy: float
    seconds: float


@dataclass
class Generators:
    """Load generator processes (spawned: they inherit no gRPC state)."""

    processes: list[BaseProcess]
    pipes: list[Connection]

    @classmethod
    def start(cls, count: int) -> Generators:
        context = multiprocessing.get_context("spawn")
        processes: list[BaseProcess] = []
        pipes = []
        for index in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=generator_main, args=(theirs, index, count), name=f"loadgen-{index}"
            )
            process.start()
            processes.append(process)
            pipes.append(ours)
        return cls(processes, pipes)

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.terminate()  # by its pid: only the processes started here
                process.join(5)

    def _receive(self, pipe: Connection, timeout: float) -> Any:
        if not pipe.poll(timeout):
            raise GeneratorFailed(f"a load generator did not answer within {timeout:.0f} s")
        kind, payload = pipe.recv()
        if kind == "error":
            raise GeneratorFailed(f"a load generator failed: {payload}")
        return payload

    def run(self, phase: Phase, server: ServerProcess) -> dict[str, Any]:
        """Runs one phase; returns its record (every figure of it, JSON-ready)."""
        return record(phase, len(self.pipes), [self.measure(phase, server)])

    def measure(self, phase: Phase, server: ServerProcess) -> RawPhase:
        """Runs one phase; returns what was measured (see `record`)."""
        for pipe in self.pipes:
            pipe.send(phase)
        for pipe in self.pipes:
            self._receive(pipe, SETUP_TIMEOUT_SECONDS)
        start = time.time() + START_DELAY_SECONDS
        for pipe in self.pipes:
            pipe.send(start)
        window_start = start + phase.warmup_seconds
        window_end = window_start + phase.seconds
        time.sleep(max(0.0, window_start - time.time()))
        server_cpu0, machine0 = server.cpu_seconds(), machine_cpu()
        time.sleep(max(0.0, window_end - time.time()))
        server_cpu1, machine1 = server.cpu_seconds(), machine_cpu()
        timeout = phase.seconds + phase.deadline_seconds + 30
        results: list[GeneratorResult] = [self._receive(p, timeout) for p in self.pipes]
        return RawPhase(
            results,
            server_cpu1 - server_cpu0,
            (machine1[0] - machine0[0]) / max(1e-9, machine1[1] - machine0[1]),
            phase.seconds,
        )


def _samples(blob: bytes) -> array[int]:
    values = array("q")
    values.frombytes(blob)
    return values


def record(phase: Phase, generators: int, runs: list[RawPhase]) -> dict[str, Any]:
    """The record of one phase from one or several runs of it (pooled)."""
    results = [result for run in runs for result in run.results]
    seconds = sum(run.seconds for run in runs)
    server_cpu = sum(run.server_cpu for run in runs)
    machine_busy = sum(run.machine_busy * run.seconds for run in runs) / max(1e-9, seconds)
    methods: dict[str, Any] = {}
    names = sorted({m for r in results for m in r.samples})
    ok = 0
    for name in names:
        latency = summarize_ns(_samples(r.samples[name]) for r in results if name in r.samples)
        if latency is None:
            continue
        ok += latency.count
        methods[name] = {"rps": round(latency.count / seconds, 1), **latency.as_dict()}
    errors: dict[str, int] = {}
    for r in results:
        for key, count in r.errors.items():
            errors[key] = errors.get(key, 0) + count
    lag = summarize_ns(_samples(r.send_lag) for r in results)
    generator_cpu = sum(r.cpu_seconds for r in results)
    return {
        "phase": phase.name,
        "target": phase.target,
        "shape": phase.shape,
        "concurrency": phase.concurrency * generators if phase.shape == CLOSED else None,
        "offered_rps": None if phase.shape == CLOSED else round(phase.rate, 1),
        "seconds": seconds,
        "slices": len(runs),
        "warmup_seconds": phase.warmup_seconds,
        "achieved_rps": round(ok / seconds, 1),
        "methods": methods,
        "errors": errors,
        "error_fraction": round(sum(errors.values()) / max(1, ok + sum(errors.values())), 5),
        "server_cpu_cores": round(server_cpu / seconds, 3),
        "server_cpu_us_per_rpc": round(server_cpu / ok * 1e6, 1) if ok else None,
        "generator_cpu_cores": round(generator_cpu / seconds, 3),
        "generator_cpu_us_per_rpc": round(generator_cpu / ok * 1e6, 1) if ok else None,
        "machine_busy_fraction": round(machine_busy, 3),
        "send_lag_p50_us": round(lag.p50, 1) if lag else None,
        "send_lag_p99_us": round(lag.p99, 1) if lag else None,
        "connections_per_worker": [
            sorted(r.connections.values()) if r.connections else None for r in results
        ],
        "notes": [r.note for r in results if r.note],
    }
