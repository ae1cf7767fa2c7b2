"""Kept subscription events on every backend (issue 20): the fold through the repository,
a sample of the oracle's lives on each backend, and a rollout beside a server of an earlier
version (which rewrites subscription rows without `folded_events` and keeps no events)."""

from __future__ import annotations

import dataclasses
import random
import sqlite3
from pathlib import Path

import pytest

from service.catalog import load_catalog
from service.domain.account import AccountState, Store, SubscriptionStatus
from service.domain.events import EventType, SubscriptionEvent, apply_event, events_of
from storage.repository import AccountRepository, Mutation
from storage.sqlite import SqliteRepository
from tests.contract.builders import RECORDED, at, key, redeem
from tests.support.lifecycle import build_life, oracle, redelivered

CATALOG = load_catalog()


def record(repository: AccountRepository, user_id: str, event: SubscriptionEvent) -> None:
    def mutate(account: AccountState) -> Mutation:
        return Mutation(apply_event(account, event, CATALOG, RECORDED).account, {})

    repository.apply(user_id, key(event.event_id, kind="event"), mutate, RECORDED)


def test_folded_events_and_kept_events_round_trip(repository: AccountRepository) -> None:
    purchase = SubscriptionEvent(
        "p1", "s1", Store.APP_STORE, EventType.PURCHASED, at(0), "premium_individual", at(30)
    )
    record(repository, "u", purchase)
    account = repository.load("u").account
    (sub,) = account.subscriptions
    assert sub.folded_events == 1  # (equality ignores it: asked for explicitly)
    (kept,) = events_of(account, "s1")
    assert (kept.event_id, kept.kind, kept.occurred_at, kept.recorded_at) == (
        "p1", "purchased", at(0), RECORDED,
    )  # fmt: skip


@pytest.mark.parametrize("seed", [3, 11, 42])
def test_a_sample_of_the_oracle_lives_on_every_backend(
    repository: AccountRepository, seed: int
) -> None:
    rng = random.Random(seed)
    life = build_life(rng)
    delivered = redelivered(life, rng)
    rng.shuffle(delivered)
    for event in delivered:
        if event.event_id not in {
            r.event_id for r in events_of(repository.load("u").account, "sub")
        }:
            record(repository, "u", event)
    expected = oracle(life.events)
    assert expected is not None
    (sub,) = repository.load("u").account.subscriptions
    assert (sub.status.value, sub.current_period_end, sub.plan_id) == (
        expected.status, expected.period_end, expected.plan,
    )  # fmt: skip


def test_a_row_an_older_server_patched_is_where_the_next_fold_starts(
    repository: AccountRepository,
) -> None:
    """Rollout: a new server kept two events; an older server then applied a cancel to
    the row alone (its rows carry no folded_events). The next event folds from that row:
    the cancel is not lost."""
    first = SubscriptionEvent(
        "p1", "s1", Store.APP_STORE, EventType.PURCHASED, at(0), "premium_individual", at(30)
    )
    second = SubscriptionEvent(
        "r1", "s1", Store.APP_STORE, EventType.RENEWED, at(30), "premium_individual", at(60)
    )
    record(repository, "u", first)
    record(repository, "u", second)

    def older_server_cancels(account: AccountState) -> Mutation:
        (sub,) = account.subscriptions
        patched = dataclasses.replace(
            sub, status=SubscriptionStatus.CANCELED, auto_renew=False, last_event_at=at(40),
            folded_events=None,
        )  # fmt: skip
        return Mutation(dataclasses.replace(account, subscriptions=(patched,)), {})

    repository.apply("u", key("old-cancel", kind="event"), older_server_cancels, RECORDED)
    (patched,) = repository.load("u").account.subscriptions
    assert patched.folded_events is None
    extension = SubscriptionEvent(
        "x1", "s1", Store.APP_STORE, EventType.PERIOD_EXTENDED, at(45),
        "premium_individual", at(70),
    )  # fmt: skip
    record(repository, "u", extension)
    account = repository.load("u").account
    (sub,) = account.subscriptions
    assert (sub.status, sub.auto_renew, sub.current_period_end) == (
        SubscriptionStatus.CANCELED, False, at(70),
    )  # fmt: skip
    assert [e.kind for e in events_of(account, "s1")] == ["snapshot", "period_extended"]
    assert sub.folded_events == 2


def test_a_write_that_leaves_the_events_alone_does_not_rewrite_them(sqlite_path: Path) -> None:
    """SQLite: a write that changes other parts of the state (a redemption here, a grant in
    the service) does not delete and insert the kept-event rows again; an event does. A
    trigger in the test database counts the deletes."""
    repository = SqliteRepository(sqlite_path)
    try:
        for n in range(3):
            record(repository, "u", SubscriptionEvent(
                f"r{n}", "s1", Store.APP_STORE, EventType.RENEWED, at(30 * n),
                "premium_individual", at(30 * n + 30),
            ))  # fmt: skip
        with sqlite3.connect(sqlite_path) as connection:
            connection.executescript(
                "CREATE TABLE deletes (n INTEGER);"
                "CREATE TRIGGER count_deletes AFTER DELETE ON subscription_events"
                " BEGIN INSERT INTO deletes VALUES (1); END;"
            )

        def deletes() -> int:
            with sqlite3.connect(sqlite_path) as connection:
                return int(connection.execute("SELECT count(*) FROM deletes").fetchone()[0])

        repository.apply("u", key("redeem-1"), redeem("o1"), RECORDED)
        assert deletes() == 0
        record(repository, "u", SubscriptionEvent(
            "c1", "s1", Store.APP_STORE, EventType.CANCELED, at(70), "premium_individual", at(90),
        ))  # fmt: skip
        assert deletes() == 3  # the three kept rows, written again with the fourth
    finally:
        repository.close()
