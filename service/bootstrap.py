"""The one place that wires the application from configuration: catalog, store, cache,
the use cases, the change feed and what it wakes (the watches and the callers' change
streams), and the observers (metrics and tracing, when the settings turn them on). The
gRPC server is built around it (service.grpc_api.server), and tests, benchmarks and
commands build it directly; whoever builds it calls `close()` once, at the end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.catalog import load_catalog
from service.config import Settings
from service.domain.catalog import Catalog
from service.usecases.cache import UserStateCache
from service.usecases.change_streams import ChangeStreams
from service.usecases.clock import Clock, utc_now
from service.usecases.freshness import FeedFollower
from service.usecases.reads import CachePolicy, ReadService
from service.usecases.stale_reads import StaleReadGate
from service.usecases.store_calls import StoreCalls
from service.usecases.support import SupportService
from service.usecases.watch import WatchService
from service.usecases.writes import WriteService
from storage.faults import FaultInjectingRepository
from storage.feed import ChangeFeed
from storage.feed_relay import RelayedFeed
from storage.observers import StoreCallObserver
from storage.repository import AccountRepository, BoundedStalenessReads
from storage.urls import open_repository

if TYPE_CHECKING:  # imported only when the settings turn them on
    from service.grpc_api.guard import RpcObserver
    from service.grpc_api.tracing import RpcTracing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Observers:
    """Who is told what happens: the RPC guard's observer (the metrics), the store-call
    observer (metrics, then tracing around them) and the tracing itself (the guard's
    spans, flushed on stop). None: off."""

    rpc: RpcObserver | None = None
    store: StoreCallObserver | None = None
    tracing: RpcTracing | None = None


@dataclass
class Application:
    catalog: Catalog
    repository: AccountRepository
    cache: UserStateCache
    reads: ReadService
    writes: WriteService
    support: SupportService
    # The bounded pool every blocking store call runs in (reads, writes, readiness).
    store_calls: StoreCalls
    clock: Clock
    # Open WatchEntitlements streams, woken by the change feed.
    watches: WatchService
    # Open WatchChanges streams (callers' near caches), fed by the change feed.
    changes: ChangeStreams
    # Follows the store's change feed into the cache, the watches and the change
    # streams (None: the store has no feed); runs on the server's loop (start_feed).
    feed: FeedFollower | None = None
    observers: Observers = field(default_factory=Observers)
    _feed_task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _closed: bool = field(default=False, init=False, repr=False)

    async def start_feed(self) -> None:
        """Begins following the change feed on the running loop: its position first, so
        that nothing cached can miss a change after it; then each applied batch wakes the
        watches and is published to the change streams."""
        feed = self.feed
        if feed is None or self._feed_task is not None:
            return
        await feed.poll_once()
        feed.listen(self.watches.on_changes)
        feed.listen(self.changes.publish)
        self._feed_task = asyncio.create_task(feed.run(), name="change-feed")

    def end_streams(self) -> None:
        """Ends every open watch and change stream (UNAVAILABLE: their clients resume on
        another server); streams never end by themselves, so a stop does this first."""
        self.watches.close()
        self.changes.close()

    async def stop_feed(self) -> None:
        """Stops following the change feed (on the loop that started it)."""
        task, self._feed_task = self._feed_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def close(self) -> None:
        """Releases the store threads, the feed's and the store's connections. Once the
        loop that ran the feed has stopped (or never ran it); a second call does
        nothing."""
        if self._closed:
            return
        self._closed = True
        self.store_calls.close()
        if self.feed is not None:
            self.feed.close()
        self.repository.close()


def build_application(
    settings: Settings,
    *,
    repository: AccountRepository | None = None,
    catalog: Catalog | None = None,
    clock: Clock = utc_now,
    feed_relay: str | None = None,
    tracer_provider: Any = None,
) -> Application:
    """The use cases over the configured catalog and store (or the given ones). With
    `feed_relay` (the Unix socket of the pod's relay, storage.feed_relay), the cache
    follows the store's change feed through the relay instead of reading it itself.
    With settings.tracing on, spans go to `tracer_provider` when given (tests: an
    in-memory exporter), else to the process's (service.grpc_api.tracing)."""
    catalog = catalog or load_catalog(settings.catalog_path)
    repository = repository or open_repository(settings.storage_url)
    if settings.fault_store_delay_ms > 0:
        log.warning("fault injection: every store call waits %d ms", settings.fault_store_delay_ms)
        repository = FaultInjectingRepository(repository, settings.fault_store_delay_ms / 1000)
    observers = build_observers(settings, tracer_provider)
    cache = UserStateCache(settings.cache_max_entries, settings.cache_ttl_seconds)
    policy = CachePolicy(settings.store_timeout_seconds, settings.max_staleness_seconds)
    store_calls = StoreCalls(settings.threads, observers.store)
    feed = _feed_follower(settings, repository, cache, feed_relay)
    reads = ReadService(
        catalog,
        repository,
        cache,
        clock,
        policy,
        store_calls,
        stale_floor=_stale_floor(repository, feed),
    )
    return Application(
        catalog=catalog,
        repository=repository,
        cache=cache,
        reads=reads,
        writes=WriteService(
            catalog, repository, cache, clock, settings.write_timeout_seconds, store_calls
        ),
        support=SupportService(repository, store_calls),
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
        observers=observers,
    )


def build_observers(settings: Settings, tracer_provider: Any = None) -> Observers:
    """The metrics (settings.metrics_port) and the tracing (settings.tracing) observers;
    neither module is imported when its setting is off."""
    rpc: RpcObserver | None = None
    store: StoreCallObserver | None = None
    backend = settings.storage_url.split("://")[0]
    if settings.metrics_port:
        from service.grpc_api.metrics import RpcMetrics, StoreMetrics

        rpc = RpcMetrics()
        store = StoreMetrics(backend)
    tracing = None
    if settings.tracing != "off":  # off: OpenTelemetry is not even imported
        from service.grpc_api.tracing import RpcTracing
        from service.grpc_api.tracing import tracer_provider as process_tracer_provider

        provider = (
            process_tracer_provider(settings.tracing)
            if tracer_provider is None
            else tracer_provider
        )
        tracing = RpcTracing(provider)
        store = tracing.store_observer(store, backend)
    return Observers(rpc=rpc, store=store, tracing=tracing)


def _feed_follower(
    settings: Settings,
    repository: AccountRepository,
    cache: UserStateCache,
    feed_relay: str | None,
) -> FeedFollower | None:
    follow = settings.cache_ttl_seconds > 0 and settings.feed_poll_seconds > 0
    if isinstance(repository, ChangeFeed) and follow:
        return FeedFollower(
            RelayedFeed(feed_relay) if feed_relay else repository,
            cache,
            # A thread of its own: behind a pool saturated by slow store calls the
            # feed would look lost and expire every cache (more store load, not less).
            StoreCalls(threads=1),
            poll_seconds=settings.feed_poll_seconds,
            store_timeout_seconds=settings.store_timeout_seconds,
            lost_after_seconds=max(1.0, 2 * settings.feed_poll_seconds),
        )
    if settings.cache_ttl_seconds > 0:
        log.warning("no change feed: writes of other processes are seen after the cache TTL")
    return None


# A stale read's window of vouching is its bound plus this margin: the feed's own lag
# (a change is seen after it commits) and clock skew between this host and the store.
STALE_READ_MARGIN_SECONDS = 5.0


def _stale_floor(
    repository: AccountRepository, feed: FeedFollower | None
) -> Callable[[str], int | None] | None:
    """Token-less misses read at bounded staleness where the store has such reads and the
    change feed can vouch for the user (service.usecases.stale_reads); else strongly."""
    if feed is None or not isinstance(repository, BoundedStalenessReads):
        return None
    bound = repository.stale_read_seconds
    if bound is None:
        return None
    gate = StaleReadGate(
        following=lambda: not feed.lost and feed.stats.lag_seconds() < feed.lost_after_seconds,
        window_seconds=bound + STALE_READ_MARGIN_SECONDS,
    )
    feed.listen(gate.on_changes)
    return gate.floor
