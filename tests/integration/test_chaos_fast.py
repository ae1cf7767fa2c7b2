"""The fast subset of the fault drills (`make chaos` runs them all, longer): the same code
(benchmarks/chaos) against a real `entitlements serve --workers 2` under a steady
read+write load, with short faults. Every acknowledged write is readable with its
consistency token afterwards, and the service serves normally again by itself (every
worker serving, health SERVING, reads and writes OK) without a restart."""

from __future__ import annotations

import secrets

from benchmarks.chaos.drills import BY_NAME
from benchmarks.chaos.harness import Config, DrillResult, run_drill
from benchmarks.chaos.load import STORM, WRITE, LoadShape
from benchmarks.chaos.report import drill_table

FAST = Config(
    baseline_s=0.5,
    fault_s=1.5,
    kill_loop_s=2.5,
    # Three kills at most: within the supervisor's crash-loop budget (5 in 30 s).
    kill_interval_s=(1.0, 1.2),
    storm_threads=8,
    settle_s=1.0,
    recovery_timeout_s=20.0,
    shape=LoadShape(readers=2, read_rate=50.0, writers=1, write_rate=20.0, read_users=20),
)
# Statuses that would mean a bug, not a fault answered as designed.
NEVER = {"INTERNAL", "UNKNOWN", "DATA_LOSS"}


def drill(name: str) -> DrillResult:
    result = run_drill(BY_NAME[name], FAST, secrets.token_hex(3))
    table = drill_table(result)
    assert not result.skipped, table
    assert not result.error, table
    assert not result.server_exited, table
    assert result.writes_acked > 0, table
    assert result.writes_checked == result.writes_acked, table
    assert result.writes_lost == 0, table
    assert result.recovered, table
    assert result.recovery_s is not None, table
    assert result.recovery_s < FAST.recovery_timeout_s, table
    assert not NEVER & set(result.phases["all"].by_status), table
    return result


def test_worker_kill_loop_loses_no_acknowledged_write_and_recovers() -> None:
    result = drill("worker-kill")
    kills = [k for k in result.extra["kills"] if k["pid"] is not None]
    assert len(kills) >= 2, drill_table(result)


def test_sqlite_lock_held_elsewhere_loses_no_acknowledged_write_and_recovers() -> None:
    result = drill("sqlite-lock")
    assert result.by_kind[WRITE].sent > 0
    assert result.health["during"].sent > 0


def test_forged_token_storm_loses_no_acknowledged_write_and_recovers() -> None:
    result = drill("forged-tokens")
    assert result.by_kind[STORM].sent > 100, drill_table(result)
