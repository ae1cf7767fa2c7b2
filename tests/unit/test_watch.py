"""WatchService over the in-memory store: a re-read that fails (the store unavailable,
nothing stale to serve) is tried again, and the watch then sends the change; closing the
service ends open watches."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

import pytest

from service.catalog import load_catalog
from service.domain.account import AccountState, Grant, GrantKind
from service.domain.errors import WatchClosed
from service.usecases.cache import UserStateCache
from service.usecases.reads import CachePolicy, ReadService
from service.usecases.store_calls import StoreCalls
from service.usecases.watch import WatchReason, WatchService
from storage.faults import FaultInjectingRepository
from storage.feed import Change
from storage.memory import MemoryRepository
from tests.state_writes import write_state

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
FEATURE = "offline_downloads"


def granted(state: AccountState) -> AccountState:
    grant = Grant("g-1", GrantKind.SUPPORT, NOW, feature_id=FEATURE)
    return dataclasses.replace(state, grants=(grant,))


def service() -> tuple[WatchService, FaultInjectingRepository, UserStateCache, StoreCalls]:
    store = FaultInjectingRepository(MemoryRepository())
    cache = UserStateCache(100, 300)
    calls = StoreCalls(threads=2)
    # No stale-if-error: a failed read is a failure, not an older answer.
    policy = CachePolicy(store_timeout_seconds=0.5, max_staleness_seconds=0)
    reads = ReadService(load_catalog(), store, cache, lambda: NOW, policy, calls)
    return WatchService(reads, max_watches=10, clock=lambda: NOW), store, cache, calls


def test_a_failed_re_read_is_tried_again_and_the_change_then_sent() -> None:
    watches, store, cache, calls = service()

    async def scenario() -> None:
        updates = watches.watch("u1", [FEATURE])
        first = await anext(updates)
        assert first.reason is WatchReason.INITIAL
        assert not first.decisions[0].granted
        store.failing = True
        write_state(store.inner, "u1", granted)  # behind the watch's back, as another replica
        cache.drop("u1", 1)  # what the change feed does, then tells the watches
        watches.on_changes([Change("u1", 1)])
        next_update = asyncio.ensure_future(anext(updates))
        await asyncio.sleep(0.3)  # the re-read has failed by now: nothing sent
        assert not next_update.done()
        store.failing = False
        update = await asyncio.wait_for(next_update, 5)  # retried within ~0.5-1.5 s
        assert update.reason is WatchReason.WRITE
        assert update.decisions[0].granted
        await updates.aclose()
        assert watches.open_watches == 0

    try:
        asyncio.run(scenario())
    finally:
        calls.close()


def test_closing_the_service_ends_open_watches_and_refuses_new_ones() -> None:
    watches, _, _, calls = service()

    async def scenario() -> None:
        updates = watches.watch("u1", [FEATURE])
        await anext(updates)
        pending = asyncio.ensure_future(anext(updates))
        await asyncio.sleep(0)
        watches.close()
        with pytest.raises(WatchClosed):
            await asyncio.wait_for(pending, 5)
        with pytest.raises(WatchClosed):
            await anext(watches.watch("u2", [FEATURE]))

    try:
        asyncio.run(scenario())
    finally:
        calls.close()
