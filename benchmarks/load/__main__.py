"""End-to-end load benchmark of the service against the empty-handler floor.

    python -m benchmarks.load            # full run (~5 minutes): JSON, Markdown, PNGs
    python -m benchmarks.load --smoke    # CI smoke (~50 s): fails past the stated bounds
    python -m benchmarks.load --smoke --compare benchmarks/baselines/smoke.json
                                         # also fails past the thresholds against a baseline

Closed-loop saturation and 1-in-flight latency come from h2load (a C load generator,
Debian package nghttp2-client); latency at fixed arrival rates from the Python open-loop
generator. The floor is measured in the same run as both kinds (sync and aio) with the
same worker count; the faster is the floor. See docs/PERFORMANCE.md and
benchmarks/load/scenarios.py for what is measured, the targets and the smoke bounds.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.load import compare, h2load, report
from benchmarks.load.arguments import parse_arguments, selected_scenarios
from benchmarks.load.servers import (
    ServerFailed,
)
from benchmarks.load.session import Run


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    selected = selected_scenarios(args)
    # Read before a run of minutes, so that a wrong path fails at once.
    baseline = compare.load(args.compare) if args.compare else None
    compare.thresholds_from(args)  # rejects a negative threshold before the run
    try:
        h2load.find_h2load()
    except h2load.H2loadMissing as error:
        print(f"benchmarks.load: {error}", file=sys.stderr)
        return 2
    started = time.monotonic()
    with contextlib.ExitStack() as folders:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            folder = args.keep
        else:
            folder = Path(folders.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        run = Run(args, folder)
        try:
            with contextlib.ExitStack() as stack:
                run.start_servers(selected, stack)
                run.measure(selected)
        except (h2load.NotOk, h2load.H2loadFailed, ServerFailed) as error:
            print(f"benchmarks.load: {error}", file=sys.stderr)
            return 2
        elapsed = time.monotonic() - started
        result = report.build(run.records, selected, run.skipped, args, elapsed, baseline)
    paths = report.write(result, args.out, smoke=args.smoke)
    print(paths.markdown.read_text())
    run.log(
        f"results: {paths.json}, {paths.markdown}" + "".join(f", {path}" for path in paths.plots)
    )
    if result["comparison"] is not None:
        print(compare.text_table(result["comparison"]))
    verdict = result["verdict"]
    for part in verdict["parts"]:
        prefix = "BENCHMARK REGRESSION" if part["enforced"] else "benchmark (not enforced)"
        for failure in part["failures"]:
            print(f"{prefix}: {part['name']}: {failure}", file=sys.stderr)
    if args.check and result["smoke"]["passed"]:
        print("benchmark smoke: within bounds")
    if verdict["exit_code"]:
        return int(verdict["exit_code"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
