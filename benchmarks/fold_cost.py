"""Write cost of a subscription as the fold of its events (issue 20): p50/p99 of
RecordSubscriptionEvent on SQLite for a subscription that already holds N-1 events, N in
(1, 12, 120), through a real server process (`entitlements serve`, 1 worker) over a real
gRPC channel, one call in flight.

Each sample is one user: their subscription is prepared with N-1 monthly renewals
(written with one store write per user, the state folded once in this process), then the
timed call records the N-th renewal, so every sample re-folds exactly N events. The 120
case runs twice: with compaction (what the service does: past 64 kept events a snapshot
replaces all but the newest 16) and without (every event kept: the cost compaction
avoids). The cases run interleaved, ROUNDS times; the report gives each round and the
median of the rounds.

    .venv/bin/python -m benchmarks.fold_cost [--samples 200] [--rounds 3]

Absolute times on a shared 2-core machine are noise-prone: the report says how busy the
machine was (load average before and after).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from benchmarks.load.servers import start_service
from entitlements.v1 import common_pb2
from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements.v1 import subscription_event_service_pb2_grpc as ev_grpc
from service.catalog import load_catalog
from service.domain.account import AccountState, Store
from service.domain.events import EventType, SubscriptionEvent, apply_event, events_of
from service.grpc_api.auth import Role, credentials_yaml, with_bearer_token
from storage.repository import IdempotencyKey, Mutation
from storage.sqlite import SqliteRepository

ADMIN_TOKEN = "fold-cost-admin-token-0123456789"
DAY = timedelta(days=30)
PLAN = "premium_individual"
START = datetime.now(UTC).replace(microsecond=0) - 130 * DAY
# (label, events the subscription holds after the timed write, compaction on)
CASES = (("1", 1, True), ("12", 12, True), ("120", 120, True), ("120-uncompacted", 120, False))


def renewal(n: int) -> SubscriptionEvent:
    kind = EventType.PURCHASED if n == 0 else EventType.RENEWED
    return SubscriptionEvent(
        f"e{n}", "sub", Store.APP_STORE, kind, START + n * DAY, PLAN, START + (n + 1) * DAY
    )


def template(events: int, compaction: bool) -> AccountState:
    """The state of a user whose subscription holds `events` renewals."""
    catalog, account = load_catalog(), AccountState.new("template")
    above = 64 if compaction else 10**9
    for n in range(events):
        account = apply_event(account, renewal(n), catalog, START, compact_above=above).account
    return account


def prepare(db: Path, label: str, events: int, compaction: bool, samples: int) -> None:
    state = template(events - 1, compaction)
    store = SqliteRepository(db)
    try:
        for i in range(samples):
            user = f"{label}-{i}"
            seeded = dataclasses.replace(state, user_id=user)
            store.apply(
                user,
                IdempotencyKey("seed", user, "fold-cost"),
                lambda _, seeded=seeded: Mutation(seeded, {}),  # type: ignore[misc]
                START,
            )
    finally:
        store.close()


def ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def request(user: str, n: int) -> ev.RecordSubscriptionEventRequest:
    event = renewal(n)
    assert event.occurred_at is not None
    assert event.current_period_end is not None
    return ev.RecordSubscriptionEventRequest(
        event_id=f"{user}-e{n}",
        user_id=user,
        subscription_id="sub",
        store=common_pb2.STORE_APP_STORE,
        event_type=(
            ev.SUBSCRIPTION_EVENT_TYPE_PURCHASED if n == 0 else ev.SUBSCRIPTION_EVENT_TYPE_RENEWED
        ),
        occurred_at=ts(event.occurred_at),
        plan_id=PLAN,
        current_period_end=ts(event.current_period_end),
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(
    stub: ev_grpc.SubscriptionEventServiceStub, label: str, events: int, first: int, samples: int
) -> list[float]:
    """Milliseconds of each timed write (users first .. first+samples-1 of the case)."""
    times = []
    for i in range(first, first + samples):
        call = request(f"{label}-{i}", events - 1)
        began = time.perf_counter()
        answer = stub.RecordSubscriptionEvent(call, timeout=10)
        times.append((time.perf_counter() - began) * 1000)
        assert answer.outcome == ev.EVENT_OUTCOME_APPLIED, answer
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="timed writes per case and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fold-cost-"))
    db = folder / "fold.db"
    SqliteRepository(db).close()
    total = args.samples * args.rounds
    for label, events, compaction in CASES:
        prepare(db, label, events, compaction, total)
    check = SqliteRepository(db)
    for label, events, _ in CASES:
        kept = len(events_of(check.load(f"{label}-0").account, "sub"))
        print(f"case {label}: {events - 1} events before the timed write, {kept} kept rows")
    check.close()
    credentials = folder / "credentials.yaml"
    credentials.write_text(credentials_yaml([("bench-admin", Role.ADMIN, ADMIN_TOKEN)]))
    env = {"ENTITLEMENTS_CREDENTIALS_FILE": str(credentials)}
    server = start_service("fold-cost", 1, f"sqlite:///{db}", env, folder / "server.log")
    load_before = os.getloadavg()
    results: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in CASES}
    try:
        channel = with_bearer_token(grpc.insecure_channel(server.target), ADMIN_TOKEN)
        stub = ev_grpc.SubscriptionEventServiceStub(channel)
        measure(stub, "1", 1, 0, 0)  # (nothing: the channel connects on the first call)
        for round_ in range(args.rounds):
            for label, events, _ in CASES:
                times = measure(stub, label, events, round_ * args.samples, args.samples)
                p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
                results[label].append((p50, p99))
                print(f"round {round_ + 1} case {label}: p50 {p50:.2f} ms p99 {p99:.2f} ms")
        channel.close()
    finally:
        server.stop()
    load_after = os.getloadavg()
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}; 2 cores")
    print("| events in the subscription | p50 ms (median of rounds) | p99 ms (median of rounds) |")
    print("|---|---|---|")
    for label, _, _ in CASES:
        p50s = [p50 for p50, _ in results[label]]
        p99s = [p99 for _, p99 in results[label]]
        print(f"| {label} | {statistics.median(p50s):.2f} | {statistics.median(p99s):.2f} |")


if __name__ == "__main__":
    main()
