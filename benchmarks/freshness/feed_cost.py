"""The cost of the change feed on the cache-hit path: the load tool's cache-hit scenario
(get_hit: GetEntitlement of one seeded, cached user; h2load, 8 connections per worker x 1
RPC in flight) as a ratio to the empty-handler floor, with the feed on (the default poll,
0.1 s) and off (ENTITLEMENTS_FEED_POLL_SECONDS=0).

`python -m benchmarks.load` cannot run it: it starts its servers with the ENTITLEMENTS_*
variables of its own environment removed (benchmarks/load/servers.py,
`clean_environment`), so the feed cannot be turned off from outside. This module uses
the load tool's parts instead (its servers, its get_hit request and answer check, its
h2load runs): both floors (sync and aio, the faster is *the* floor, as in the load tool),
the service with the feed on and with it off, on one seeded SQLite file, each measured
`rounds` times in turns (the order reversed every other round), each round's ratios
taken against that round's floor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.floor_server import KINDS
from benchmarks.freshness.stats import median
from benchmarks.load import fixed, h2load
from benchmarks.load.scenarios import H2LOAD_CONNECTIONS_PER_WORKER, SCENARIOS
from benchmarks.load.servers import ServerProcess, start_floor, start_service

FEED_ON = "service, feed on"
FEED_OFF = "service, feed off"
FEED_ENV = "ENTITLEMENTS_FEED_POLL_SECONDS"
# What a worker logs at start when it does not follow the change feed.
NO_FEED_LOG_LINE = "no change feed"


def measure(
    *,
    workers: int,
    db: Path,
    common_env: dict[str, str],
    folder: Path,
    rounds: int,
    seconds: float,
    warmup_requests: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    scenario = SCENARIOS["get_hit"]
    connections = H2LOAD_CONNECTIONS_PER_WORKER * workers
    with contextlib.ExitStack() as stack:
        servers: dict[str, ServerProcess] = {}
        for kind in KINDS:
            name = f"floor-{kind}"
            log(f"  starting the {kind} floor")
            servers[name] = start_floor(kind, workers, common_env, folder / f"{name}.log", name)
            stack.callback(servers[name].stop)
        for name, poll in ((FEED_ON, None), (FEED_OFF, "0")):
            # TTL 3600 s as the load tool's cached server: every read is a hit.
            env = {**common_env, "ENTITLEMENTS_CACHE_TTL_SECONDS": "3600"}
            if poll is not None:
                env[FEED_ENV] = poll
            log(f"  starting the {name} ({FEED_ENV}={poll or 'default'})")
            server = start_service(
                name, workers, f"sqlite:///{db}", env, folder / f"feedcost-{poll or 'on'}.log"
            )
            servers[name] = server
            stack.callback(server.stop)
        targets = {
            name: fixed.target(scenario, server.host, server.port, connections)
            for name, server in servers.items()
        }
        answers = {
            name: h2load.check_all(target, parse=fixed.checker(scenario))
            for name, target in targets.items()
        }
        runs: list[dict[str, Any]] = []
        order = list(servers)
        for index in range(rounds):
            measured: dict[str, dict[str, Any]] = {}
            for name in order if index % 2 == 0 else list(reversed(order)):
                result = h2load.saturation(
                    targets[name],
                    connections=connections,
                    requests=None,
                    duration_s=seconds,
                    warmup_requests=warmup_requests,
                    server_pids=servers[name].worker_pids,
                    label=name,
                    check=False,
                    expected=answers[name],
                )
                measured[name] = {
                    "rps": round(result.rps, 1),
                    "cpu_us_per_rpc": round(result.cpu_us_per_rpc or 0.0, 1),
                    "not_ok": result.not_ok,
                    "p99_ms": round(result.p99_ms, 3),
                }
                log(f"  round {index + 1}: {name}: {result.rps:,.0f} rps, not ok {result.not_ok}")
            floor_name = max((f"floor-{k}" for k in KINDS), key=lambda n: measured[n]["rps"])
            floor_rps = measured[floor_name]["rps"]
            runs.append(
                {
                    "round": index + 1,
                    "servers": measured,
                    "floor": floor_name,
                    "ratio_feed_on": round(measured[FEED_ON]["rps"] / floor_rps, 3),
                    "ratio_feed_off": round(measured[FEED_OFF]["rps"] / floor_rps, 3),
                }
            )
        # The servers say whether they follow the feed (service/bootstrap.py).
        feed_off_logged = {
            name: NO_FEED_LOG_LINE in servers[name].log_path.read_text(errors="replace")
            for name in (FEED_ON, FEED_OFF)
        }
    on = median([r["ratio_feed_on"] for r in runs])
    off = median([r["ratio_feed_off"] for r in runs])
    return {
        "scenario": "get_hit (load tool): GetEntitlement, cache hit",
        "workers": workers,
        "connections": connections,
        "seconds_per_run": seconds,
        "warmup_requests": warmup_requests,
        "rounds": runs,
        # True only for the feed-off server when the setting took effect.
        "no_feed_logged": feed_off_logged,
        "median_ratio_feed_on": round(on, 3),
        "median_ratio_feed_off": round(off, 3),
        # Positive: the feed costs that much of the ratio to the floor.
        "ratio_difference_off_minus_on": round(off - on, 3),
        "median_cpu_us_per_rpc_feed_on": median(
            [r["servers"][FEED_ON]["cpu_us_per_rpc"] for r in runs]
        ),
        "median_cpu_us_per_rpc_feed_off": median(
            [r["servers"][FEED_OFF]["cpu_us_per_rpc"] for r in runs]
        ),
    }
