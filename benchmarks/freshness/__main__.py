"""Freshness benchmark (issue 13): how fast a write reaches every cache and every watch.

    python -m benchmarks.freshness          # ~3-5 minutes; JSON + Markdown in --out
    python -m benchmarks.freshness --no-spanner --no-feed-cost --repetitions 50   # quicker

1. Write-to-visible latency on `entitlements serve --workers 2` (SQLite, seeded like the
   load tool), under a background cache-hit read load (h2load at --load-fraction of the
   server's measured saturation): token-less reads through connections to every worker
   until all see a GrantEntitlement made through one (benchmarks/freshness/visibility.py).
2. Watch notification latency: a WatchEntitlements stream on the worker that did not take
   the write, from the write's acknowledgement to the message.
3. Both again on the Cloud Spanner emulator (2 workers), when the emulator and the Spanner
   change feed are there (else the report says why it was skipped).
4. The feed's cost on the cache-hit path: the load tool's get_hit ratio to the floor with
   the feed on and off (benchmarks/freshness/feed_cost.py).
5. The hit rate at cache TTL 30 s vs 300 s (and 3600 s): a stated synthetic trace replayed
   through the real cache on a simulated clock (benchmarks/freshness/ttl_replay.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.data import seed, write_credentials
from benchmarks.freshness import background, feed_cost, report, ttl_replay, visibility
from benchmarks.load import h2load
from benchmarks.load.environment import environment
from benchmarks.load.scenarios import H2LOAD_CONNECTIONS_PER_WORKER, HIT_USERS, SPANNER_USERS
from benchmarks.load.servers import ServerFailed, ServerProcess, start_service

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "results"
SQLITE = "sqlite"
SPANNER = "spanner-emulator"
NO_SPANNER_FEED = "skipped: no Spanner change feed yet"


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.freshness", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--workers", type=int, default=2, help="server workers")
    parser.add_argument(
        "--repetitions", type=int, default=150, help="writes measured on SQLite (distinct users)"
    )
    parser.add_argument(
        "--spanner-repetitions", type=int, default=100, help="writes measured on the emulator"
    )
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=90.0,
        help="stop the repetitions of one store after this long",
    )
    parser.add_argument(
        "--readers-per-worker", type=int, default=2, help="reader connections per worker"
    )
    parser.add_argument(
        "--poll-interval", type=float, default=0.005, help="sleep between a reader's reads (s)"
    )
    parser.add_argument(
        "--jitter",
        type=float,
        default=0.2,
        help="a random pause of up to this long (s) before each write, so that writes land "
        "at random phases of the workers' feed polls",
    )
    parser.add_argument(
        "--load-fraction",
        type=float,
        default=0.4,
        help="background cache-hit load, as a fraction of the server's h2load saturation (0: none)",
    )
    parser.add_argument(
        "--feed-cost-rounds", type=int, default=2, help="feed cost: runs of each server"
    )
    parser.add_argument(
        "--feed-cost-seconds", type=float, default=4.0, help="feed cost: seconds per run"
    )
    parser.add_argument("--no-spanner", action="store_true", help="skip the Spanner emulator")
    parser.add_argument("--no-feed-cost", action="store_true", help="skip the feed cost")
    parser.add_argument("--no-ttl", action="store_true", help="skip the TTL hit-rate replay")
    parser.add_argument(
        "--ttl-minutes", type=float, default=30.0, help="TTL replay: simulated minutes"
    )
    parser.add_argument("--ttl-users", type=int, default=1_000_000, help="TTL replay: users")
    parser.add_argument(
        "--ttl-write-rate", type=float, default=10.0, help="TTL replay: writes per second"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    parser.add_argument("--keep", type=Path, help="keep the servers' logs and database here")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return " ".join(f"{v:.2f}" for v in os.getloadavg())


@contextlib.contextmanager
def _stopping(server: ServerProcess) -> Iterator[ServerProcess]:
    try:
        yield server
    finally:
        server.stop()


def _common_env(folder: Path) -> dict[str, str]:
    credentials = write_credentials(folder / "credentials.yaml")
    return {
        "ENTITLEMENTS_CREDENTIALS_FILE": str(credentials),
        "ENTITLEMENTS_DATA_DIR": str(folder),
        "ENTITLEMENTS_AUDIT_LOG_FILE": str(folder / "audit.log"),
        # As the load tool: above the RPCs in flight any phase sends to a worker.
        "ENTITLEMENTS_MAX_CONCURRENT_RPCS": "64",
    }


def written_users(store: str, repetitions: int) -> list[str]:
    """One never-seen user per repetition (a free user: the grant is its first write).
    Not seeded users: on the emulator (1.5.28) the Spanner backend's load query takes
    time in proportion to the tables' size (~1 s with 1,100 seeded users, past the 0.5 s
    store budget), so its database is kept as small as the load tool's (110 users)."""
    run = time.strftime("%H%M%S")
    return [f"fresh-{store}-{run}-{index:04d}" for index in range(repetitions)]


def measure_store(
    args: argparse.Namespace, store: str, server: ServerProcess, repetitions: int
) -> dict[str, Any]:
    """Write-to-visible and watch latency on one server, under the background load."""
    connections = H2LOAD_CONNECTIONS_PER_WORKER * max(1, len(server.worker_pids))
    target = background.cache_hit_target(server.host, server.port, connections)
    # The loaded request answers OK (a real client, each connection hashed to some worker)
    # before any load.
    for _ in range(4 * len(server.worker_pids)):
        background.checked_answer(target, patience_seconds=30.0)
    result: dict[str, Any] = {"store": store, "workers": len(server.worker_pids)}
    time.sleep(0.5)  # the workers log at start whether they follow the feed
    if feed_cost.NO_FEED_LOG_LINE in server.log_path.read_text(errors="replace"):
        return {**result, "skipped": f"skipped: the server follows no change feed ({store})"}
    rate = 0.0
    if args.load_fraction > 0:
        try:
            saturation = background.saturation_rps(target, server.worker_pids, 2.0, connections)
            rate = args.load_fraction * saturation
            result["saturation_rps"] = round(saturation, 1)
        except h2load.H2loadMissing:
            rate = 300.0  # no h2load to measure with: a modest fixed rate for Python threads
            result["saturation_rps"] = None
        share = f"{args.load_fraction:.0%} of saturation" if result["saturation_rps"] else "fixed"
        log(f"  background load: {rate:,.0f} rps ({share})")
    with contextlib.ExitStack() as stack:
        # The reader connections first: where each went is told by the sockets this
        # process opened meanwhile, and the Python loader's would blur that.
        by_worker = stack.enter_context(
            visibility.connections(server.target, server.worker_pids, args.readers_per_worker)
        )
        log(f"  connections by worker: { {pid: len(c) for pid, c in by_worker.items()} }")
        if rate > 0:
            tally = stack.enter_context(background.steady_load(target, rate, connections))
        began = time.monotonic()
        repetitions_done = visibility.repeat(
            by_worker,
            written_users(store, repetitions),
            poll_interval=args.poll_interval,
            jitter=args.jitter,
            request_prefix=f"freshness-{store}-{int(time.time())}",
            budget_seconds=args.budget_seconds,
            log=log,
        )
        result["seconds"] = round(time.monotonic() - began, 1)
    result["background_load"] = tally.as_dict() if rate > 0 else None
    result["readers_per_worker"] = args.readers_per_worker
    result["poll_interval_s"] = args.poll_interval
    result["jitter_s"] = args.jitter
    result.update(visibility.summary(repetitions_done))
    return result


def run_sqlite(args: argparse.Namespace, folder: Path, common: dict[str, str]) -> dict[str, Any]:
    db = folder / "freshness.db"
    from storage.sqlite import SqliteRepository

    users = HIT_USERS  # as the load tool's cache-hit server
    log(f"seeding {users} users into SQLite")
    repository = SqliteRepository(db)
    seed(repository, users, datetime.now(UTC))
    repository.close()
    log(f"starting entitlements serve --workers {args.workers} on SQLite (default settings)")
    with _stopping(
        start_service(SQLITE, args.workers, f"sqlite:///{db}", common, folder / "sqlite.log")
    ) as server:
        result = measure_store(args, SQLITE, server, args.repetitions)
    result["seeded_users"] = users
    return result


def spanner_feed_missing() -> str | None:
    """Why the Spanner run cannot measure the feed, or None."""
    try:
        from storage.spanner import SpannerRepository
    except ImportError as error:
        return f"skipped: the Spanner backend is not available ({error})"
    if not hasattr(SpannerRepository, "read_changes"):
        return NO_SPANNER_FEED
    return None


def run_spanner(args: argparse.Namespace, folder: Path, common: dict[str, str]) -> dict[str, Any]:
    missing = spanner_feed_missing()
    if missing:
        return {"store": SPANNER, "skipped": missing}
    from benchmarks.load import spanner

    users = SPANNER_USERS  # as the load tool's Spanner scenario
    log(f"starting the Spanner emulator and seeding {users} users")
    began = time.monotonic()
    emulator, reason = spanner.prepare(users, datetime.now(UTC), folder / "emulator.log")
    if emulator is None:
        return {"store": SPANNER, "skipped": reason}
    log(f"  seeded in {time.monotonic() - began:.0f} s")
    try:
        env = {**common, **emulator.server_env()}
        log(f"starting entitlements serve --workers {args.workers} on the Spanner emulator")
        with _stopping(
            start_service(SPANNER, args.workers, emulator.storage_url, env, folder / "spanner.log")
        ) as server:
            result = measure_store(args, SPANNER, server, args.spanner_repetitions)
        result["seeded_users"] = users
        return result
    finally:
        emulator.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    result: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.freshness " + " ".join(sys.argv[1:] if argv is None
                                                                else argv),
        "uptime_at_start": uptime(),
        "settings": {
            "cache_ttl_seconds": "default (300)",
            "feed_poll_seconds": "default (0.1)",
            "workers": args.workers,
        },
    }  # fmt: skip
    log(f"load: {result['uptime_at_start']}")
    if not args.no_ttl:
        spec = ttl_replay.TraceSpec(
            users=args.ttl_users, write_rate=args.ttl_write_rate, seconds=args.ttl_minutes * 60
        )
        log(f"TTL replay: {spec}")
        result["ttl_hit_rate"] = ttl_replay.measure(spec)
        for row in result["ttl_hit_rate"]["results"]:
            log(f"  TTL {row['ttl_seconds']:>6.0f} s: hit rate {row['hit_rate']:.3f}")
    with contextlib.ExitStack() as stack:
        if args.keep:
            folder = args.keep
            folder.mkdir(parents=True, exist_ok=True)
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="freshness-")))
        common = _common_env(folder)
        try:
            result["sqlite"] = run_sqlite(args, folder, common)
            report.log_store(result["sqlite"], log)
            if args.no_spanner:
                result["spanner"] = {"store": SPANNER, "skipped": "skipped: --no-spanner"}
            else:
                result["spanner"] = run_spanner(args, folder, common)
                report.log_store(result["spanner"], log)
            if not args.no_feed_cost and shutil.which("h2load") is None:
                result["feed_cost_skipped"] = "h2load is missing (Debian nghttp2-client)"
            elif not args.no_feed_cost:
                log("feed cost on the cache-hit path (feed on vs off, against the floor)")
                result["feed_cost"] = feed_cost.measure(
                    workers=args.workers,
                    db=folder / "freshness.db",
                    common_env=common,
                    folder=folder,
                    rounds=args.feed_cost_rounds,
                    seconds=args.feed_cost_seconds,
                    warmup_requests=1000,
                    log=log,
                )
        except (ServerFailed, visibility.Unbalanced, h2load.NotOk) as error:
            log(f"failed: {error}")
            result["error"] = str(error)
    result["uptime_at_end"] = uptime()
    result["environment"] = environment()
    json_path, markdown_path = report.write(result, args.out)
    print(report.markdown(result))
    log(f"wrote {json_path} and {markdown_path}")
    return 1 if "error" in result else 0


if __name__ == "__main__":
    raise SystemExit(main())
