"""Memory of a warm user-state cache: bytes per entry, and the size of 1,000,000 users.

    python -m benchmarks.memory [--users 1000000] [--stored-users 100000] [--out DIR]

Fills a real `UserStateCache` through the real read path (`ReadService`) with two
populations: free users the store has never seen (the common case; they are cached too,
and share one decision per feature), and users with stored state (the benchmark's demo
situations, loaded from SQLite as production loads them). Measures the process's
resident memory (RSS, /proc/self/statm) after each step, with garbage collected:

1. state only: every user's state cached (what a cache miss leaves behind);
2. plus one memoised decision per user (what one GetEntitlement leaves);
3. plus every feature's decision (ListEntitlements), measured on a tenth of the users and
   scaled, since it takes a while in pure Python.

Writes a JSON file and prints a summary with bytes per entry.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.coroutines import completed
from benchmarks.data import bench_user_ids, seed
from service.catalog import load_catalog
from service.usecases.cache import UserStateCache
from service.usecases.reads import ReadService
from storage.memory import MemoryRepository
from storage.repository import AccountRepository
from storage.sqlite import SqliteRepository

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
PAGE = os.sysconf("SC_PAGE_SIZE")
# The stated budget: a worker's cache of 1,000,000 users, each with the one or two memoised
# decisions a typical caller leaves (one GetEntitlement feature), must fit in 1 GiB.
BUDGET_BYTES_PER_WORKER = 2**30


def rss_bytes() -> int:
    gc.collect()
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


def user_ids(count: int) -> list[str]:
    # 36-character ids, like UUIDs, the common shape of account ids.
    return [f"{i:08d}-0000-4000-8000-000000000000" for i in range(count)]


def measure(users: int, stored: bool = False) -> dict[str, Any]:
    """Free users the store has never seen, or (stored) users with state in a SQLite store
    (the benchmark's demo situations: subscribers, trials, grants, households), loaded as
    production loads them."""
    catalog = load_catalog()
    now = datetime.now(UTC)
    repository: AccountRepository
    if stored:
        folder = Path(tempfile.mkdtemp(prefix="memory-bench-"))
        repository = SqliteRepository(folder / "users.db")
        seed(repository, users, now)
        ids = bench_user_ids(users)
    else:
        repository = MemoryRepository()  # every user unknown to it: a free user
        ids = user_ids(users)
    users = len(ids)
    cache = UserStateCache(users + 1, 3600.0)
    reads = ReadService(catalog, repository, cache, lambda: now)
    baseline = rss_bytes()
    started = time.monotonic()
    for uid in ids:
        cache.put(repository.load(uid))
    states = rss_bytes()
    fill_seconds = time.monotonic() - started
    for uid in ids:
        completed(reads.get_entitlement(uid, "ad_free_playback"))
    one_decision = rss_bytes()
    sample = ids[: max(1, users // 10)]
    for uid in sample:
        completed(reads.list_entitlements(uid))
    all_decisions = rss_bytes()
    assert len(cache) == users
    per_state = (states - baseline) / users
    per_decision = (one_decision - states) / users
    per_all = (all_decisions - one_decision) / len(sample)
    return {
        "population": "stored" if stored else "free",
        "users": users,
        "features": len(catalog.features),
        "python": sys.version.split()[0],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "fill_seconds": round(fill_seconds, 1),
        "rss_baseline_mib": round(baseline / 2**20, 1),
        "bytes_per_entry_state_only": round(per_state),
        "bytes_per_entry_one_decision": round(per_state + per_decision),
        "bytes_per_entry_all_decisions": round(per_state + per_decision + per_all),
        "mib_for_1m_state_only": round(per_state * 1e6 / 2**20),
        "mib_for_1m_one_decision": round((per_state + per_decision) * 1e6 / 2**20),
        "mib_for_1m_all_decisions": round((per_state + per_decision + per_all) * 1e6 / 2**20),
        "budget_mib_per_worker_for_1m": BUDGET_BYTES_PER_WORKER // 2**20,
    }


def summary(result: dict[str, Any]) -> str:
    one = result["mib_for_1m_one_decision"]
    budget = result["budget_mib_per_worker_for_1m"]
    return (
        f"warm cache of {result['users']:,} {result['population']} users: "
        f"{result['bytes_per_entry_state_only']} B/entry (state), "
        f"{result['bytes_per_entry_one_decision']} B/entry (+1 decision), "
        f"{result['bytes_per_entry_all_decisions']} B/entry (+all {result['features']} "
        f"decisions); 1,000,000 users: {result['mib_for_1m_state_only']} / {one} / "
        f"{result['mib_for_1m_all_decisions']} MiB per worker process "
        f"(budget {budget} MiB with one decision: {'within' if one <= budget else 'OVER'})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    parser.add_argument("--users", type=int, default=1_000_000, help="free users")
    parser.add_argument(
        "--stored-users", type=int, default=100_000, help="users with stored state (SQLite)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    results = [measure(args.users), measure(args.stored_users, stored=True)]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"memory-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    for result in results:
        print(summary(result))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
