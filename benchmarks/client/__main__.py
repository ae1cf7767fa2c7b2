"""Client benchmark (issue 22): the near cache of the client library against real servers.

    python -m benchmarks.client            # `make bench-client`: about 2.5 minutes
    python -m benchmarks.client --short    # a smoke (about a minute)

Two `entitlements serve` processes (1 worker each) on one SQLite file: the measured client
follows server B; writes of "another process" go through server A. Measured:

1. near-cache hit latency in process (p50/p99 of timed get_entitlement hits), and checks/s
   per client core (untimed hits over the process's CPU time);
2. RPCs saved on a Zipf trace of checks, with writes through A meanwhile;
3. staleness after a write by another process: from A's acknowledgement until the client
   (on B) answers with it, polling every 2 ms (p50/p99/max); then again while h2load keeps
   B busy with cache-hit reads (4 connections, closed loop);
4. memory per cached decision (tracemalloc, decisions stored into a NearCache);
5. server B's CPU and memory with 100 open change streams vs none: idle (heartbeats only),
   then while 20 writes/s go through A (every stream gets every change).

JSON and Markdown go to --out (benchmarks/results). The machine's load is recorded: these
are figures of a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.client import measures
from benchmarks.data import ADMIN_TOKEN, SERVICE_TOKEN, write_credentials
from benchmarks.load.servers import start_service
from entitlements_client import EntitlementsClient
from storage.sqlite import SqliteRepository

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "results"


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.client")
    parser.add_argument("--short", action="store_true", help="a smoke: fewer of everything")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def _markdown(results: dict[str, Any]) -> str:
    hit = results["hit"]
    zipf = results["zipf"]
    stale = results["staleness"]["milliseconds"]
    loaded = results["staleness_under_load"]["milliseconds"]
    cost = results["streams"]
    lines = [
        f"# Client benchmark ({results['when']}, load average {results['loadavg']})",
        "",
        "| measure | value |",
        "|---|---|",
        f"| near-cache hit p50 / p99 (us) | {hit['microseconds']['p50']:.2f} / "
        f"{hit['microseconds']['p99']:.2f} (timer {hit['timer_overhead_microseconds']['p50']:.2f}"
        " included) |",
        f"| RPCs during {hit['microseconds']['n']} hits | {hit['rpcs_during_hits']} |",
        f"| checks/s per client core | {hit['checks_per_cpu_second']} |",
        f"| Zipf({zipf['zipf_exponent']}) trace: {zipf['checks']} checks, {zipf['users']} users,"
        f" {zipf['distinct_keys']} distinct keys, {zipf['writes_meanwhile']} writes | "
        f"{zipf['rpcs']} RPCs, "
        f"{100 * zipf['rpcs_saved_fraction']:.1f}% saved |",
        f"| staleness after another process's write, p50 / p99 / max (ms, n={stale['n']}) | "
        f"{stale['p50']:.0f} / {stale['p99']:.0f} / {stale['max']:.0f} |",
        f"| the same while h2load keeps server B busy (4 connections of cache-hit reads) | "
        f"{loaded['p50']:.0f} / {loaded['p99']:.0f} / {loaded['max']:.0f} |",
        f"| memory per cached decision | {results['memory']['bytes_per_decision']} bytes |",
        f"| server CPU, idle vs {cost['streams']} change streams | "
        f"{cost['server_cpu_percent_idle']}% vs {cost['server_cpu_percent_with_streams']}% |",
        f"| server CPU while {cost['writes_per_second']} writes/s go through A, no stream vs "
        f"{cost['streams']} | {cost['server_cpu_percent_writing']}% vs "
        f"{cost['server_cpu_percent_writing_with_streams']}% |",
        f"| server RSS per open change stream | {cost['server_rss_kib_per_stream']} KiB |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    short = args.short
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg": " ".join(f"{v:.1f}" for v in os.getloadavg()),
        "short": short,
    }
    with tempfile.TemporaryDirectory(prefix="bench-client-") as folder:
        db = Path(folder) / "entitlements.db"
        SqliteRepository(db).close()
        credentials = write_credentials(Path(folder) / "credentials.yaml")
        env = {"ENTITLEMENTS_CREDENTIALS_FILE": str(credentials)}
        url = f"sqlite:///{db}"
        a = start_service("a", 1, url, env, Path(folder) / "a.log")
        b = start_service("b", 1, url, env, Path(folder) / "b.log")
        try:
            client = EntitlementsClient(
                b.target, credential=SERVICE_TOKEN, near_cache=True, read_timeout=10
            )
            writer = EntitlementsClient(a.target, credential=ADMIN_TOKEN, write_timeout=30)
            with client, writer:
                measures.wait_fresh(client)
                results["hit"] = measures.hit_latency(client, 50_000 if short else 300_000)
                results["zipf"] = measures.zipf_trace(
                    client,
                    writer,
                    users=2_000 if short else 10_000,
                    checks=10_000 if short else 50_000,
                    exponent=1.1,
                    writes_per_second=5 if short else 10,
                )
                results["staleness"] = measures.staleness(client, writer, 20 if short else 100)
                # Again while h2load keeps server B busy with cache-hit reads.
                background = measures.BackgroundLoad(b.target, SERVICE_TOKEN, 4, Path(folder))
                try:
                    time.sleep(1)
                    results["staleness_under_load"] = measures.staleness(
                        client, writer, 20 if short else 100
                    )
                finally:
                    background.stop()
                writer.grant_entitlement(measures.grant("bench-sample", "sample-1"))
                sample = client.get_entitlement(
                    "bench-sample", "offline_downloads", full_consistency=True
                )
                results["memory"] = measures.memory_per_decision(
                    sample, 20_000 if short else 100_000
                )
                results["streams"] = measures.open_streams_cost(
                    b.target,
                    SERVICE_TOKEN,
                    100,
                    5 if short else 10,
                    b.cpu_seconds,
                    b.worker_pids[0],
                    writer,
                    writes_per_second=20,
                )
        finally:
            a.stop()
            b.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"client-{results['when'].replace(':', '')}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = _markdown(results)
    stem.with_suffix(".md").write_text(markdown)
    print(markdown)
    print(f"results: {stem}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
