"""The one place that wires the application from configuration: catalog, store, cache
and the use cases. The gRPC server is built around it (service.grpc_api.server), and
tests and benchmarks build it directly."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from service.catalog import load_catalog
from service.config import Settings
from service.domain.catalog import Catalog
from service.usecases.cache import UserStateCache
from service.usecases.change_streams import ChangeStreams
from service.usecases.clock import Clock, utc_now
from service.usecases.freshness import FeedFollower
from service.usecases.reads import CachePolicy, ReadService
from service.usecases.store_calls import StoreCalls
from service.usecases.watch import WatchService
from service.usecases.writes import WriteService
from storage.faults import FaultInjectingRepository
from storage.feed import ChangeFeed
from storage.feed_relay import RelayedFeed
from storage.repository import AccountRepository
from storage.urls import open_repository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Application:
    catalog: Catalog
    repository: AccountRepository
    cache: UserStateCache
    reads: ReadService
    writes: WriteService
    # The bounded pool every blocking store call runs in (reads, writes, readiness).
    store_calls: StoreCalls
    clock: Clock
    # Open WatchEntitlements streams, woken by the change feed.
    watches: WatchService
    # Open WatchChanges streams (callers' near caches), fed by the change feed.
    changes: ChangeStreams
    # Follows the store's change feed into the cache (None: the store has no feed); the
    # server runs it on its event loop.
    feed: FeedFollower | None = None


def build_application(
    settings: Settings,
    *,
    repository: AccountRepository | None = None,
    catalog: Catalog | None = None,
    clock: Clock = utc_now,
    feed_relay: str | None = None,
) -> Application:
    """The use cases over the configured catalog and store (or the given ones). With
    `feed_relay` (the Unix socket of the pod's relay, storage.feed_relay), the cache
    follows the store's change feed through the relay instead of reading it itself."""
    catalog = catalog or load_catalog(settings.catalog_path)
    repository = repository or open_repository(settings.storage_url)
    if settings.fault_store_delay_ms > 0:
        log.warning("fault injection: every store call waits %d ms", settings.fault_store_delay_ms)
        repository = FaultInjectingRepository(repository, settings.fault_store_delay_ms / 1000)
    cache = UserStateCache(settings.cache_max_entries, settings.cache_ttl_seconds)
    policy = CachePolicy(settings.store_timeout_seconds, settings.max_staleness_seconds)
    store_calls = StoreCalls(settings.threads)
    feed = None
    follow = settings.cache_ttl_seconds > 0 and settings.feed_poll_seconds > 0
    if isinstance(repository, ChangeFeed) and follow:
        feed = FeedFollower(
            RelayedFeed(feed_relay) if feed_relay else repository,
            cache,
            # A thread of its own: behind a pool saturated by slow store calls the
            # feed would look lost and expire every cache (more store load, not less).
            StoreCalls(threads=1),
            poll_seconds=settings.feed_poll_seconds,
            store_timeout_seconds=settings.store_timeout_seconds,
            lost_after_seconds=max(1.0, 2 * settings.feed_poll_seconds),
        )
    elif settings.cache_ttl_seconds > 0:
        log.warning("no change feed: writes of other processes are seen after the cache TTL")
    reads = ReadService(catalog, repository, cache, clock, policy, store_calls)
    return Application(
        catalog=catalog,
        repository=repository,
        cache=cache,
        reads=reads,
        writes=WriteService(
            catalog, repository, cache, clock, settings.write_timeout_seconds, store_calls
        ),
        store_calls=store_calls,
        clock=clock,
        watches=WatchService(reads, settings.max_watch_streams, clock),
        changes=ChangeStreams(
            settings.max_change_streams,
            feed_position=lambda: feed.position if feed is not None else None,
            feed_lost=lambda: feed.lost if feed is not None else True,
            # A resume from another worker's or replica's position reads the feed once.
            catch_up=(lambda after: feed.read_after(after, store_calls)) if feed else None,
        ),
        feed=feed,
    )
