"""The drills: each starts its own server on a fresh store (Run.serve), makes its fault for
real, and fixes it; the harness (harness.py) puts the load on, waits for recovery and
judges. `DRILLS` lists them in the order `make chaos` runs them.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.chaos import faults
from benchmarks.chaos.harness import DB_NAME, Drill, Run, Skipped
from benchmarks.chaos.load import (
    read_request,
    storm,
)
from benchmarks.chaos.server import kill_worker
from benchmarks.data import SERVICE_TOKEN
from benchmarks.load.servers import entitlements_command


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def drill_worker_kill(run: Run) -> None:
    """kill -9 of a serving worker every 1-2 s for ~10 s (the supervisor restarts them)."""
    server = run.serve(sqlite_url(run.db_url_path))
    rng = random.Random(run.config.seed)
    low, high = run.config.kill_interval_s
    kills: list[dict[str, Any]] = []
    run.begins()
    assert run.fault_begin is not None
    stop_at = run.fault_begin + run.config.kill_loop_s
    # Bounded: at most one kill per `low` seconds of the loop.
    for _ in range(int(run.config.kill_loop_s / low) + 1):
        if not server.alive():
            run.notes.append("the server exited during the kill loop")
            break
        pids = server.serving()
        now = time.monotonic()
        if pids:
            pid = rng.choice(pids)
            try:
                kill_worker(server, pid)
            except ProcessLookupError:  # it died meanwhile (the server stopping it)
                run.notes.append(f"worker pid {pid} was already gone")
                pid = 0
            kills.append({"at_s": round(now - run.fault_begin, 2), "pid": pid or None})
        else:
            kills.append({"at_s": round(now - run.fault_begin, 2), "pid": None})
            run.notes.append("a tick found no serving worker to kill (both restarting)")
        next_at = now + rng.uniform(low, high)
        if next_at >= stop_at:
            break
        run.sleep(next_at - time.monotonic())
    run.ends()  # the last kill
    run.extra["kills"] = kills


def drill_lock_held(run: Run) -> None:
    """Another process holds SQLite's write lock for ~3 s."""
    run.serve(sqlite_url(run.db_url_path))
    with faults.lock_held_by_another_process(run.db_url_path) as holder:
        run.begins()
        run.extra["lock_holder_pid"] = holder
        run.sleep(run.config.fault_s)
    run.ends()


def drill_read_only(run: Run) -> None:
    """The database file read-only (0400) for ~3 s; the server runs without root's
    capabilities that would override file modes."""
    try:
        prefix = faults.without_file_capabilities()
    except faults.FaultUnavailable as error:
        raise Skipped(str(error)) from error
    run.extra["server_prefix"] = " ".join(prefix)
    run.serve(sqlite_url(run.db_url_path), prefix=prefix)
    with faults.read_only(run.db_url_path):
        run.begins()
        run.sleep(run.config.fault_s)
    run.ends()


def drill_disk_full(run: Run) -> None:
    """The database on a small tmpfs, filled up for ~3 s, then the filler removed."""
    with contextlib.ExitStack() as stack:
        try:
            mount = faults.small_tmpfs(run.folder / "small", run.config.tmpfs_size)
            disk = stack.enter_context(mount)
        except faults.FaultUnavailable as error:
            raise Skipped(str(error)) from error
        stack.callback(run.close)  # the server stops before the file system goes
        db = disk / "data" / DB_NAME
        run.serve(sqlite_url(db))
        filler = disk / "filler"
        run.begins()
        run.extra["filler_bytes"] = faults.fill(filler)
        run.extra["tmpfs_size"] = run.config.tmpfs_size
        run.sleep(run.config.fault_s - (time.monotonic() - (run.fault_begin or 0.0)))
        filler.unlink()
        run.ends()
        run.finish()


def drill_data_dir_removed(run: Run) -> None:
    """The data directory removed (after a backup taken under the write lock) for ~3 s,
    then restored from the backup at the same path."""
    db = run.db_url_path
    run.serve(sqlite_url(db))
    backup = run.folder / "backup.db"
    run.begins()
    faults.remove_data_directory(db, backup)
    run.sleep(run.config.fault_s)
    exists = db.parent.exists()
    run.extra["directory_recreated_by_the_server"] = exists
    if exists:
        run.notes.append("the data directory came back during the fault: a worker created it")
    faults.restore_data_directory(db, backup)
    run.ends()


def drill_forged_tokens(run: Run) -> None:
    """A storm of reads carrying a forged consistency token (version 10^30)."""
    from service.usecases.tokens import issue_token

    run.serve(sqlite_url(run.db_url_path))
    assert run.load is not None
    users = run.load.read_users[:8] + [f"{run.label}-forged-{i}" for i in range(8)]
    stop = threading.Event()

    def forged(user_id: str) -> str:
        return issue_token(user_id, 10**30)

    load = run.load
    storm_thread = threading.Thread(
        target=storm, args=(load, users, forged, run.config.storm_threads, stop), daemon=True
    )
    run.begins()
    storm_thread.start()
    run.sleep(run.config.fault_s)
    stop.set()
    storm_thread.join(timeout=10)
    run.ends()
    run.extra["storm_threads"] = run.config.storm_threads
    run.extra["forged_version"] = "10^30"


def drill_overload(run: Run) -> None:
    """h2load with ~2,000 streams in flight on cache-hit reads, beside the load."""
    from benchmarks.load import h2load

    try:
        h2load.find_h2load()
    except h2load.H2loadMissing as error:
        raise Skipped(str(error)) from error
    server = run.serve(sqlite_url(run.db_url_path))
    assert run.load is not None
    target = h2load.Target(
        server.host,
        server.port,
        "/entitlements.v1.EntitlementService/GetEntitlement",
        read_request(run.load.read_users[0]).SerializeToString(),
        token=SERVICE_TOKEN,
    )
    expected = h2load.check_all(target)  # OK once, and cached
    connections, in_flight = run.config.overload_connections, run.config.overload_in_flight
    run.begins()
    try:
        outcome = h2load.run(
            target,
            connections=connections,
            in_flight=in_flight,
            duration_s=run.config.overload_s,
            threads=2,
            check=False,
            expected=expected,
            label="overload",
            mode="overload",
        )
    finally:
        run.ends()
    run.extra["h2load"] = {
        "in_flight": connections * in_flight,
        "connections": connections,
        "duration_s": run.config.overload_s,
        "requests_done": outcome.n,
        "rps": round(outcome.rps),
        "p50_ms": round(outcome.p50_ms, 1),
        "p99_ms": round(outcome.p99_ms, 1),
        "max_ms": round(outcome.max_ms, 1),
        "stream_failures": outcome.failed + outcome.errored + outcome.timeout,
        # Answers without a message: gRPC errors (RESOURCE_EXHAUSTED), estimated.
        "answers_without_message": outcome.short_answers,
    }


def drill_spanner_outage(run: Run) -> None:
    """The Spanner emulator killed (kill -9, by its PID) for ~3 s, restarted on its port
    with the database created and migrated again; the server stays up."""
    try:
        from storage.spanner.client import EMULATOR_HOST_ENV, MULTIPLEXED_RW_ENV
        from storage.spanner.testing import DEBIAN_PACKAGE, find_binary, start_emulator
    except ImportError as error:
        raise Skipped(f"the Spanner backend is not available: {error}") from error
    binary = find_binary()
    if binary is None:
        raise Skipped(f"Spanner emulator not found (Debian package {DEBIAN_PACKAGE})")
    with _environment({MULTIPLEXED_RW_ENV: "false"}):
        emulator = start_emulator(binary, run.folder / "emulator.log")
        try:
            emulator.create_instance()
            database = emulator.create_database("chaos")
            run.serve(
                database.url,
                env={
                    EMULATOR_HOST_ENV: emulator.host,
                    MULTIPLEXED_RW_ENV: "false",
                    # The emulator on a busy machine takes longer than the 0.5 s default.
                    "ENTITLEMENTS_STORE_TIMEOUT_SECONDS": "2.0",
                },
            )
            run.begins()
            emulator.kill()
            run.sleep(run.config.fault_s)
            restarted = time.monotonic()
            emulator.restart()
            emulator.create_instance()
            emulator.create_database(name=database.database, migrated=False)
            # As an operator would: `entitlements migrate`, a fresh process (a client of
            # this process would still hold sessions of the killed emulator).
            migrate_command = [*entitlements_command(), "migrate", "--storage", database.url]
            migrated = subprocess.run(
                migrate_command,
                env=emulator.child_env(),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if migrated.returncode != 0:
                raise RuntimeError(f"entitlements migrate failed: {migrated.stdout[-2000:]}")
            run.ends()
            assert run.fault_begin is not None
            run.extra["emulator_down_s"] = round(restarted - run.fault_begin, 2)
            run.extra["restart_and_migrate_s"] = round(time.monotonic() - restarted, 2)
            run.exclude_acked_before(
                run.fault_begin,
                "acknowledged before the emulator was killed: the emulator keeps its data in "
                "memory only, so they went with it (not the service's loss)",
            )
            run.finish()
        finally:
            run.close()
            emulator.stop()


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


DRILLS = (
    Drill("worker-kill", "worker kill -9 every 1-2 s for ~10 s", drill_worker_kill),
    Drill("sqlite-lock", "SQLite write lock held by another process", drill_lock_held),
    Drill("sqlite-read-only", "SQLite database file read-only", drill_read_only),
    Drill("disk-full", "full disk (small tmpfs)", drill_disk_full),
    Drill("data-dir-removed", "data directory removed, then restored", drill_data_dir_removed),
    Drill("forged-tokens", "forged-token storm (version 10^30)", drill_forged_tokens),
    Drill("overload", "overload: h2load, 2,000 streams in flight", drill_overload),
    Drill("spanner-outage", "Spanner emulator killed and restarted", drill_spanner_outage),
)
BY_NAME = {drill.name: drill for drill in DRILLS}
