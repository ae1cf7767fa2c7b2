"""The cache-hit read path of a warm server, without gRPC: validation, cache lookup,
memoised decision (GetEntitlement), offer decisions (GetOffers), a batch of 100."""

from __future__ import annotations

import random
from typing import Any

from benchmarks.coroutines import completed
from benchmarks.data import bench_user_ids, user_id
from benchmarks.micro.conftest import BLOCKS
from service.domain.account import UserState
from service.domain.rules import Platform
from service.usecases.cache import UserStateCache
from service.usecases.reads import ReadService


def test_get_entitlement_cache_hit(benchmark: Any, warm_reads: ReadService) -> None:
    answer = benchmark(
        lambda: completed(warm_reads.get_entitlement(user_id(3, "active"), "ad_free_playback"))
    )
    assert answer.value.granted


def test_get_offers_cache_hit(benchmark: Any, warm_reads: ReadService) -> None:
    answer = benchmark(
        lambda: completed(warm_reads.get_offers(user_id(3, "free"), "US", Platform.WEB))
    )
    assert answer.value.eligible


def test_batch_get_entitlements_100_cache_hit(benchmark: Any, warm_reads: ReadService) -> None:
    """100 queries: 50 users x 2 features, as the load tool's batches."""
    rng = random.Random(7)
    users = rng.sample(bench_user_ids(BLOCKS * 11), 50)
    features = list(warm_reads.catalog.features)
    queries = [(u, f) for u in users for f in rng.sample(features, 2)]
    answer = benchmark(lambda: completed(warm_reads.batch_get_entitlements(queries)))
    assert len(answer.value) == 100


def test_user_state_cache_get(benchmark: Any, states: dict[str, UserState]) -> None:
    """The LRU lookup alone (lock, freshness and version checks)."""
    cache = UserStateCache(100_000, 3600.0)
    for state in states.values():
        cache.put(state)
    entry = benchmark(cache.get, user_id(2, "trial"))
    assert entry is not None
