"""Fixtures of the micro benchmarks: the example catalog, a fixed time, the benchmark
users (benchmarks.data: copies of the demo situations) and a read service whose cache
holds them all.

Run with `make bench-micro` (pytest-benchmark; JSON in benchmarks/results/). These files
are not part of the default `pytest` run, whose testpaths is tests/.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from benchmarks.data import SITUATIONS, bench_user_ids, seed, user_id, user_states
from service.catalog import load_catalog
from service.domain.account import UserState
from service.domain.catalog import Catalog
from service.usecases.cache import UserStateCache
from service.usecases.reads import ReadService
from storage.memory import MemoryRepository

# Inside the example catalog's holiday discount window, as in the tests.
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
BLOCKS = 10  # 110 users


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def states() -> dict[str, UserState]:
    return user_states(BLOCKS, NOW)


@pytest.fixture(scope="session")
def situation_states(states: dict[str, UserState]) -> dict[str, UserState]:
    """One user per demo situation (free, trial, active, ... promo)."""
    return {s: states[user_id(0, s)] for s in SITUATIONS}


@pytest.fixture
def warm_reads(catalog: Catalog) -> ReadService:
    """A read service over the in-memory store with every benchmark user cached and
    every decision memoised (the cache-hit path of a warm server)."""
    repository = MemoryRepository()
    seed(repository, BLOCKS * len(SITUATIONS), NOW)
    reads = ReadService(catalog, repository, UserStateCache(100_000, 3600.0), lambda: NOW)
    for uid in bench_user_ids(BLOCKS * len(SITUATIONS)):
        asyncio.run(reads.list_entitlements(uid))
    return reads
