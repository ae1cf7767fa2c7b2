"""How one drill is run and judged.

Each drill starts its own `entitlements serve --workers N` on a fresh store, puts the
steady load on it (load.py), lets it run for a baseline, makes its fault for real, fixes
it, and then waits for recovery: the service serves normally again, without a restart of
the server, when every worker serves again and, after the last failure seen since the
fault ended, a health check answered SERVING, a read OK and a write OK, and nothing failed
for `settle_s` after that. Recovery time is from the end of the fault (the fix applied)
to the end of the last of those three answers. Then every acknowledged write is read back
with its consistency token (writes lost: those missing). The drills themselves are in
drills.py.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.chaos.load import (
    PROBE,
    READ,
    STORM,
    WRITE,
    Load,
    LoadShape,
    Observation,
    Verification,
    verify,
)
from benchmarks.chaos.server import ServeProcess, start_serve
from benchmarks.data import write_credentials
from benchmarks.load.stats import percentile

DB_NAME = "entitlements.db"
LOAD_KINDS = (READ, WRITE, STORM)


@dataclass(frozen=True)
class Config:
    workers: int = 2
    baseline_s: float = 2.0
    fault_s: float = 3.0  # lock held, read-only, disk full, directory gone, storm, emulator down
    kill_loop_s: float = 10.0
    kill_interval_s: tuple[float, float] = (1.0, 2.0)
    storm_threads: int = 16
    overload_connections: int = 20
    overload_in_flight: int = 100  # h2load streams per connection: 2,000 in flight
    overload_s: float = 4.0
    tmpfs_size: str = "8m"
    settle_s: float = 2.0
    recovery_timeout_s: float = 30.0
    shape: LoadShape = field(default_factory=LoadShape)
    # ENTITLEMENTS_* settings of every server (the defaults otherwise). Readiness probes
    # every 0.5 s (default 2 s), so that health can follow faults of a few seconds.
    server_env: tuple[tuple[str, str], ...] = (("ENTITLEMENTS_READINESS_INTERVAL_SECONDS", "0.5"),)
    seed: int = 11


class Skipped(Exception):
    """The drill cannot run here; the message says why."""


@dataclass
class Phase:
    sent: int
    by_status: dict[str, int]
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


def _ms(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 1)


def phase_of(observations: Sequence[Observation]) -> Phase:
    by_status: dict[str, int] = {}
    for observation in observations:
        by_status[observation.code] = by_status.get(observation.code, 0) + 1
    durations = sorted(round((o.ended - o.started) * 1e6) for o in observations)
    return Phase(
        sent=len(observations),
        by_status=dict(sorted(by_status.items(), key=lambda item: -item[1])),
        p50_ms=_ms(percentile(durations, 50.0) / 1000.0),
        p99_ms=_ms(percentile(durations, 99.0) / 1000.0),
        max_ms=_ms(durations[-1] / 1000.0) if durations else None,
    )


@dataclass
class DrillResult:
    name: str
    title: str
    skipped: str = ""
    error: str = ""
    # Load RPCs (reads, writes, storm reads) by phase: before, during, after the fault,
    # and all of them; health probes apart.
    phases: dict[str, Phase] = field(default_factory=dict)
    by_kind: dict[str, Phase] = field(default_factory=dict)
    health: dict[str, Phase] = field(default_factory=dict)
    fault_s: float | None = None
    writes_acked: int = 0
    writes_checked: int = 0
    writes_lost: int = 0
    lost_request_ids: list[str] = field(default_factory=list)
    unreadable: dict[str, int] = field(default_factory=dict)
    writes_not_checked: int = 0
    not_checked_reason: str = ""
    recovered: bool = False
    recovery_s: float | None = None
    # The server exited before the drill stopped it (a restart would be needed).
    server_exited: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    server_output_tail: str = ""

    @property
    def failed(self) -> bool:
        if self.skipped:
            return False
        return bool(self.error) or self.writes_lost > 0 or not self.recovered or self.server_exited

    def as_dict(self) -> dict[str, Any]:
        def phase(p: Phase) -> dict[str, Any]:
            return dict(p.__dict__)

        return {
            "name": self.name,
            "title": self.title,
            "skipped": self.skipped,
            "error": self.error,
            "failed": self.failed,
            "fault_s": self.fault_s,
            "phases": {k: phase(v) for k, v in self.phases.items()},
            "by_kind": {k: phase(v) for k, v in self.by_kind.items()},
            "health": {k: phase(v) for k, v in self.health.items()},
            "writes_acked": self.writes_acked,
            "writes_checked": self.writes_checked,
            "writes_lost": self.writes_lost,
            "lost_request_ids": self.lost_request_ids[:50],
            "unreadable": self.unreadable,
            "writes_not_checked": self.writes_not_checked,
            "not_checked_reason": self.not_checked_reason,
            "recovered": self.recovered,
            "recovery_s": self.recovery_s,
            "server_exited": self.server_exited,
            "extra": self.extra,
            "notes": self.notes,
            "server_output_tail": self.server_output_tail if self.failed else "",
        }


class Run:
    """One drill's run: its server, its load, the fault's begin and end, the verdict."""

    def __init__(self, name: str, config: Config, folder: Path, label: str) -> None:
        self.name = name
        self.config = config
        self.folder = folder
        self.label = label
        self.credentials = write_credentials(folder / "credentials.yaml")
        self.server: ServeProcess | None = None
        self.load: Load | None = None
        self.fault_begin: float | None = None
        self.fault_end: float | None = None
        self.recovered_at: float | None = None
        self.finished = False
        self.verification: Verification | None = None
        self.exclude_before: float | None = None
        self.exclude_reason = ""
        self.extra: dict[str, Any] = {}
        self.notes: list[str] = []
        self.server_pid = 0
        self.server_survived = False
        self._serve_args: tuple[str, tuple[str, ...], dict[str, str]] | None = None

    # -- for the drills ------------------------------------------------------------------

    def serve(
        self,
        storage_url: str,
        *,
        prefix: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> ServeProcess:
        """Starts the server and the load on it, and runs the baseline."""
        environment = {**dict(self.config.server_env), **(env or {})}
        self._serve_args = (storage_url, tuple(prefix), environment)
        self.server = start_serve(
            storage_url,
            self.credentials,
            workers=self.config.workers,
            prefix=prefix,
            env=environment,
            cwd=self.folder,
        )
        self.server_pid = self.server.pid
        self.load = Load(self.server.target, self.label, self.config.shape)
        self.load.start()
        self.sleep(self.config.baseline_s)
        return self.server

    @property
    def db_url_path(self) -> Path:
        return self.folder / "data" / DB_NAME

    def begins(self) -> None:
        self.fault_begin = time.monotonic()

    def ends(self) -> None:
        self.fault_end = time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def exclude_acked_before(self, moment: float, reason: str) -> None:
        """Writes acknowledged before `moment` are not read back (the store itself lost
        them by design, e.g. the in-memory emulator killed)."""
        self.exclude_before, self.exclude_reason = moment, reason

    def finish(self) -> None:
        """Waits for recovery, stops the load, reads the acknowledged writes back, stops
        the server. Idempotent; drills call it before undoing their setup (a tmpfs)."""
        if self.finished:
            return
        self.finished = True
        if self.server is None or self.load is None:
            return
        if self.fault_begin is not None and self.fault_end is None:
            self.ends()
        self._await_recovery()
        self.load.stop()
        self.server_survived = self.server.alive()
        if self.server_survived:
            self.verification = verify(self.server.target, self._writes_to_check())
        self.server.stop()
        if not self.server_survived and self._serve_args is not None:
            # The drill failed already (the server exited); a new server on the same
            # store still tells whether the acknowledged writes are there.
            storage_url, prefix, environment = self._serve_args
            checker = start_serve(
                storage_url,
                self.credentials,
                workers=1,
                prefix=prefix,
                env=environment,
                cwd=self.folder,
            )
            try:
                self.verification = verify(checker.target, self._writes_to_check())
                self.notes.append("acknowledged writes read back through a new server")
            finally:
                checker.stop()

    def close(self) -> None:
        if self.load is not None and not self.load.stopped:
            self.load.stop()
        if self.server is not None:
            self.server.stop()

    # -- the verdict ---------------------------------------------------------------------

    def _writes_to_check(self) -> list[Any]:
        assert self.load is not None
        if self.exclude_before is None:
            return list(self.load.acked)
        return [w for w in self.load.acked if w.acked_at >= self.exclude_before]

    def recovery_point(self) -> float | None:
        """When the service served normally again after the fault (None: not yet)."""
        assert self.load is not None
        assert self.server is not None
        end = self.fault_end
        if end is None:
            return None
        seen = [o for o in self.load.since(end) if o.kind in (READ, WRITE, PROBE)]
        after = max((o.ended for o in seen if not o.ok), default=end)
        firsts = []
        for kind in (PROBE, READ, WRITE):
            ends = [o.ended for o in seen if o.kind == kind and o.ok and o.started >= after]
            if not ends:
                return None
            firsts.append(min(ends))
        workers = self.server.all_workers_serving_since()
        if workers is None:
            return None
        return max(*firsts, workers, end)

    def _await_recovery(self) -> None:
        assert self.server is not None
        assert self.fault_end is not None
        deadline = self.fault_end + self.config.recovery_timeout_s
        while time.monotonic() < deadline and self.server.alive():
            point = self.recovery_point()
            if point is not None and time.monotonic() - point >= self.config.settle_s:
                self.recovered_at = point
                return
            time.sleep(0.1)
        if not self.server.alive():
            self.notes.append(f"the server exited (status {self.server.process.returncode})")

    def result(self, title: str) -> DrillResult:
        result = DrillResult(self.name, title, extra=self.extra, notes=self.notes)
        if self.load is None or self.server is None:
            return result
        observations = list(self.load.observations)
        begin, end = self.fault_begin, self.fault_end
        load_obs = [o for o in observations if o.kind in LOAD_KINDS]
        probes = [o for o in observations if o.kind == PROBE]

        def split(items: list[Observation]) -> dict[str, Phase]:
            phases = {"all": phase_of(items)}
            if begin is not None and end is not None:
                phases["before"] = phase_of([o for o in items if o.started < begin])
                phases["during"] = phase_of([o for o in items if begin <= o.started < end])
                phases["after"] = phase_of([o for o in items if o.started >= end])
            return phases

        result.phases = split(load_obs)
        result.health = split(probes)
        result.by_kind = {
            kind: phase_of([o for o in load_obs if o.kind == kind])
            for kind in LOAD_KINDS
            if any(o.kind == kind for o in load_obs)
        }
        if begin is not None and end is not None:
            result.fault_s = round(end - begin, 2)
        result.writes_acked = len(self.load.acked)
        if self.verification is not None:
            result.writes_checked = self.verification.checked
            result.writes_lost = len(self.verification.lost)
            result.lost_request_ids = self.verification.lost
            result.unreadable = self.verification.errors
        else:
            self.notes.append("acknowledged writes not read back: the server was gone")
            result.writes_lost = 0
        result.writes_not_checked = result.writes_acked - result.writes_checked
        result.not_checked_reason = self.exclude_reason if result.writes_not_checked else ""
        result.recovered = self.recovered_at is not None
        if self.recovered_at is not None and end is not None:
            result.recovery_s = round(self.recovered_at - end, 2)
        result.server_exited = not self.server_survived
        result.server_output_tail = self.server.output_tail()
        return result


@dataclass(frozen=True)
class Drill:
    name: str
    title: str
    body: Callable[[Run], None]


def run_drill(drill: Drill, config: Config, run_id: str) -> DrillResult:
    """Runs one drill in a scratch folder of its own; never raises for a drill's failure
    (the result says it)."""
    with tempfile.TemporaryDirectory(prefix=f"chaos-{drill.name}-") as scratch:
        folder = Path(scratch)
        folder.chmod(0o700)
        run = Run(drill.name, config, folder, f"{drill.name}-{run_id}")
        try:
            drill.body(run)
            run.finish()
        except Skipped as skipped:
            run.close()
            return DrillResult(drill.name, drill.title, skipped=str(skipped))
        except Exception as error:
            run.close()
            result = run.result(drill.title)
            result.error = f"{type(error).__name__}: {error}"
            return result
        finally:
            run.close()
        return run.result(drill.title)
