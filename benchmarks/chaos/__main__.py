"""Fault drills against a real `entitlements serve --workers 2` under a steady load.

    python -m benchmarks.chaos                      # every drill (~3-5 minutes)
    python -m benchmarks.chaos --only sqlite-lock   # some of them
    python -m benchmarks.chaos --list

Prints a table per drill and a summary, writes JSON and Markdown to --out (default
benchmarks/results/, git-ignored). Exits 1 when an acknowledged write was lost, a drill
never recovered (or its server exited), or a drill failed to run; a drill that cannot be
made here (no root for a tmpfs, no emulator, no h2load) is skipped with its reason.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.chaos.drills import BY_NAME, DRILLS
from benchmarks.chaos.harness import Config, DrillResult, run_drill
from benchmarks.chaos.report import drill_table, markdown, summary_markdown, verdict

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "results"


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.chaos", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    parser.add_argument(
        "--only", action="append", choices=sorted(BY_NAME), help="run only this drill"
    )
    parser.add_argument("--list", action="store_true", help="list the drills and exit")
    return parser.parse_args(argv)


def run_all(
    names: Sequence[str], config: Config, run_id: str, echo: bool = True
) -> list[DrillResult]:
    results = []
    for name in names:
        drill = BY_NAME[name]
        started = time.monotonic()
        if echo:
            print(f"-- {name}: {drill.title} ...", flush=True)
        result = run_drill(drill, config, run_id)
        result.extra.setdefault("drill_wall_s", round(time.monotonic() - started, 1))
        if echo:
            print(drill_table(result), flush=True)
        results.append(result)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    if args.list:
        for drill in DRILLS:
            print(f"{drill.name:<18} {drill.title}")
        return 0
    config = Config()
    names = args.only or [drill.name for drill in DRILLS]
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_id = f"{stamp}-{secrets.token_hex(3)}"
    started = time.monotonic()
    results = run_all(names, config, run_id)
    meta = {
        "started": stamp,
        "wall_s": round(time.monotonic() - started, 1),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "workers": config.workers,
        "server_env": dict(config.server_env),
        "load": (
            f"{config.shape.readers} reader threads x {config.shape.read_rate:g}/s "
            f"GetEntitlement on {config.shape.read_users} users, "
            f"{config.shape.writers} writer x {config.shape.write_rate:g}/s GrantEntitlement, "
            f"health checked {config.shape.probe_rate:g}/s on new connections"
        ),
        "config": asdict(config),
    }
    print(summary_markdown(results))
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"chaos-{run_id}"
    document = {"meta": meta, "drills": [result.as_dict() for result in results]}
    base.with_suffix(".json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    base.with_suffix(".md").write_text(markdown(results, meta))
    print(f"\nwrote {base}.json and {base}.md ({meta['wall_s']} s)")
    failed = [result for result in results if result.failed]
    for result in failed:
        print(f"FAILED: {result.name}: {verdict(result)} {result.error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
