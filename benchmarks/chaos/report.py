"""Tables of drill results: one per drill (by phase), and the summary (Markdown)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.chaos.harness import DrillResult, Phase

PHASES = ("before", "during", "after")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def statuses(by_status: dict[str, int]) -> str:
    return ", ".join(f"{code} {count}" for code, count in by_status.items()) or "-"


def verdict(result: DrillResult) -> str:
    if result.skipped:
        return "skipped"
    if result.error:
        return "error"
    if result.server_exited:
        return "SERVER EXITED"
    if result.writes_lost:
        return "WRITES LOST"
    if not result.recovered:
        return "NEVER RECOVERED"
    return "ok"


def drill_table(result: DrillResult) -> str:
    """The drill's own table: load RPCs and health checks by phase, then the verdict."""
    lines = [f"== {result.name}: {result.title} =="]
    if result.skipped:
        return "\n".join([*lines, f"skipped: {result.skipped}", ""])
    header = f"{'phase':<8} {'kind':<7} {'sent':>6} {'p50 ms':>8} {'p99 ms':>8}  answers"
    lines.append(header)
    rows: list[tuple[str, str, Phase]] = []
    for name in PHASES:
        if name in result.phases:
            rows.append((name, "rpcs", result.phases[name]))
            rows.append((name, "health", result.health[name]))
    for name, kind, phase in rows:
        lines.append(
            f"{name:<8} {kind:<7} {phase.sent:>6} {_number(phase.p50_ms):>8} "
            f"{_number(phase.p99_ms):>8}  {statuses(phase.by_status)}"
        )
    for kind, phase in result.by_kind.items():
        lines.append(
            f"{'all':<8} {kind:<7} {phase.sent:>6} {_number(phase.p50_ms):>8} "
            f"{_number(phase.p99_ms):>8}  {statuses(phase.by_status)}"
        )
    lines.append(
        f"fault {_number(result.fault_s)} s; writes acknowledged {result.writes_acked}, "
        f"read back {result.writes_checked}, lost {result.writes_lost}; "
        + (
            f"served normally again {result.recovery_s:g} s after the fault ended"
            if result.recovery_s is not None
            else "never served normally again"
        )
        + f" [{verdict(result)}]"
    )
    if result.writes_not_checked:
        lines.append(f"not read back: {result.writes_not_checked} ({result.not_checked_reason})")
    for key, value in result.extra.items():
        lines.append(f"{key}: {value}")
    lines.extend(f"note: {note}" for note in result.notes)
    if result.error:
        lines.append(f"error: {result.error}")
    if result.failed and result.server_output_tail:
        lines.append("server output (tail):")
        lines.append(result.server_output_tail.rstrip())
    lines.append("")
    return "\n".join(lines)


def _p99_during(result: DrillResult) -> str:
    during = result.phases.get("during")
    text = _number(during.p99_ms if during else None)
    h2load = result.extra.get("h2load")
    if isinstance(h2load, dict):
        text += f" (h2load {h2load.get('p99_ms')})"
    return text


def _sent(result: DrillResult) -> str:
    all_rpcs = result.phases.get("all")
    text = str(all_rpcs.sent if all_rpcs else 0)
    h2load = result.extra.get("h2load")
    if isinstance(h2load, dict):
        text += f" + {h2load.get('requests_done')} h2load"
    return text


def summary_markdown(results: Sequence[DrillResult]) -> str:
    """One row per drill (the reliability table of docs/OPERATIONS.md)."""
    lines = [
        "| drill | RPCs sent | answers by status | p99 during the fault (ms) "
        "| writes acked / lost | serves normally again after (s) |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        if result.skipped:
            lines.append(f"| {result.title} | skipped: {result.skipped} | | | | |")
            continue
        all_rpcs = result.phases.get("all")
        recovery = (
            f"{result.recovery_s:g}" if result.recovery_s is not None else f"**{verdict(result)}**"
        )
        lost = f"{result.writes_acked} / {result.writes_lost}"
        if result.writes_lost:
            lost = f"{result.writes_acked} / **{result.writes_lost}**"
        lines.append(
            f"| {result.title} | {_sent(result)} "
            f"| {statuses(all_rpcs.by_status) if all_rpcs else '-'} "
            f"| {_p99_during(result)} | {lost} | {recovery} |"
        )
    return "\n".join(lines)


def markdown(results: Sequence[DrillResult], meta: dict[str, Any]) -> str:
    parts = [
        "# Fault drills (`make chaos`)",
        "",
        f"Run {meta.get('started')}, {meta.get('cpus')} CPUs, `entitlements serve --workers "
        f"{meta.get('workers')}` (settings {meta.get('server_env')}); load per drill: "
        f"{meta.get('load')}.",
        "",
        summary_markdown(results),
        "",
        "RPCs sent: the steady load's reads and writes (and the storm's reads) over the whole "
        "drill; answers by status: all of them; p99: of the answers to the RPCs sent during "
        "the fault; writes lost: acknowledged GrantEntitlement not readable with their "
        "consistency token after recovery; serves normally again: from the end of the fault "
        "until every worker serves and health, a read and a write answer OK again, without "
        "a restart of the server.",
        "",
        "## Per drill",
        "",
        "```",
        *(drill_table(result) for result in results),
        "```",
        "",
    ]
    return "\n".join(parts)
