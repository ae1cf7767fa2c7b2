"""The h2load processes: started side by side and bounded in time, and the CPU time of
processes (the server's workers, h2load itself)."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.load.h2load_output import (
    H2loadFailed,
)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (raises OSError when it is gone)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # After "pid (comm)": state is field 0, utime field 11, stime field 12 (clock ticks).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of all the processes, in seconds."""
    return sum(process_cpu_seconds(pid) for pid in pids)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def invoke_all(commands: Sequence[list[str]], timeout_s: float) -> list[str]:
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
