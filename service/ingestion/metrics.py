"""Prometheus metrics of the ingestion (docs/INGESTION.md, docs/SLO.md), in the registry
the worker's other metrics use (summed across workers by the supervisor's endpoint)."""

from __future__ import annotations

import functools

from prometheus_client import Counter, Gauge, Histogram

from service.usecases.ingestion import Verdict

# Seconds from the store sending a notification to its event being durable.
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


class IngestionMetrics:
    def __init__(self) -> None:
        self.notifications = Counter(
            "entitlements_notifications",
            "Store notifications taken in, by store and verdict (recorded, duplicate, "
            "ignored, dead_letter, conflict, retry).",
            ("store", "verdict"),
        )
        self.refused = Counter(
            "entitlements_notifications_refused",
            "Store notifications refused before mapping (never verifiable), by store and "
            "reason (malformed, verification_failure, wrong_app, wrong_environment...).",
            ("store", "reason"),
        )
        self.dead_letters = Counter(
            "entitlements_dead_letters",
            "Notifications kept as dead letters, by store and reason.",
            ("store", "reason"),
        )
        self.open_dead_letters = Gauge(
            "entitlements_dead_letters_open",
            "Dead letters not yet resolved by a replay, as the store counts them (the same "
            "store for every worker: the latest count, not a sum).",
            multiprocess_mode="livemax",
        )
        self.lag = Histogram(
            "entitlements_notification_lag_seconds",
            "From the store sending a notification to its event being durable.",
            ("store",),
            buckets=LAG_BUCKETS,
        )

    def ingested(self, source: str, verdict: Verdict, lag_seconds: float | None) -> None:
        self.notifications.labels(source, verdict.value).inc()
        if lag_seconds is not None:
            self.lag.labels(source).observe(lag_seconds)

    def dead_letter(self, source: str, reason: str) -> None:
        self.dead_letters.labels(source, reason).inc()

    def open_dead_letters_now(self, count: int) -> None:
        self.open_dead_letters.set(count)

    def refused_one(self, source: str, reason: str) -> None:
        self.refused.labels(source, reason).inc()


@functools.cache
def ingestion_metrics() -> IngestionMetrics:
    """This process's ingestion metrics (created once, after the multiprocess folder is set)."""
    return IngestionMetrics()
