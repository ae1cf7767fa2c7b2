"""What the contract test modules share: states, writes and helpers."""

from __future__ import annotations

import dataclasses
import sqlite3
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from service.domain.account import (
    AccountState,
    Grant,
    GrantKind,
    HouseholdMembership,
    HouseholdRole,
    Redemption,
    Store,
    StoredEvent,
    Subscription,
    SubscriptionStatus,
)
from storage.repository import (
    AccountMutation,
    Applied,
    HistoryDraft,
    IdempotencyKey,
    Mutation,
)
from storage.sqlite import SqliteRepository
from tests.state_writes import AccountChange

T0 = datetime(2024, 1, 15, 9, 30, tzinfo=UTC)


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def sub(
    subscription_id: str,
    status: SubscriptionStatus = SubscriptionStatus.ACTIVE,
    store: Store = Store.WEB,
    plan_id: str = "premium_individual",
) -> Subscription:
    return Subscription(
        subscription_id=subscription_id,
        plan_id=plan_id,
        status=status,
        store=store,
        started_at=at(-30),
        current_period_end=at(30),
    )


RICH = AccountState(
    user_id="rich-user",
    version=0,
    home_market="SE",
    subscriptions=(
        Subscription(
            subscription_id="sub-grace",
            plan_id="premium_family",
            status=SubscriptionStatus.IN_GRACE_PERIOD,
            store=Store.GOOGLE_PLAY,
            started_at=at(-400),
            current_period_end=at(-1),
            grace_period_end=at(15),
            auto_renew=True,
            last_event_at=at(-1) + timedelta(microseconds=123456),
            offer_id="winback_3m",
        ),
        Subscription(
            subscription_id="sub-canceled",
            plan_id="premium_individual",
            status=SubscriptionStatus.CANCELED,
            store=Store.APP_STORE,
            started_at=at(-60),
            current_period_end=at(5),
            auto_renew=False,
        ),
        sub("sub-expired", SubscriptionStatus.EXPIRED, Store.PARTNER, "premium_duo"),
        sub("sub-trial", SubscriptionStatus.TRIALING, Store.WEB),
        sub("sub-hold", SubscriptionStatus.ON_HOLD, Store.GOOGLE_PLAY),
        sub("sub-paused", SubscriptionStatus.PAUSED, Store.GOOGLE_PLAY),
        sub("sub-revoked", SubscriptionStatus.REVOKED, Store.APP_STORE),
    ),
    grants=(
        Grant(
            grant_id="g-feature",
            kind=GrantKind.PROMOTIONAL,
            starts_at=at(-10),
            feature_id="offline_downloads",
            quota_value=30,
            expires_at=at(20),
        ),
        Grant(
            grant_id="g-plan-open-ended",
            kind=GrantKind.PARTNER,
            starts_at=at(-5),
            plan_id="premium_individual",
        ),
        Grant(
            grant_id="g-revoked",
            kind=GrantKind.SUPPORT,
            starts_at=at(-3),
            feature_id="lossless_audio",
            expires_at=at(27),
            revoked_at=at(-1),
        ),
    ),
    redemptions=(
        Redemption("trial_1m", "intro", at(-400), Store.WEB),
        Redemption("winback_3m", "winback", at(-2), Store.GOOGLE_PLAY),
        # The same offer twice: redemptions are a history, not a set.
        Redemption("trial_1m", "intro", at(-300), Store.APP_STORE),
    ),
    memberships=(
        HouseholdMembership("hh-old", HouseholdRole.MEMBER, "mgr-old", at(-300), at(-100)),
        HouseholdMembership("hh-own", HouseholdRole.MANAGER, "rich-user", at(-50)),
    ),
    student_verified_until=at(200),
    # Kept events (a snapshot and an event as sent), stored as they are, in this order.
    subscription_events=(
        StoredEvent(
            "sub-grace",
            "snapshot:e7",
            "snapshot",
            at(-30),
            at(-29) + timedelta(microseconds=7),
            '{"events":3,"first":null}',
        ),
        StoredEvent(
            "sub-grace",
            "e8",
            "renewal_failed",
            at(-1) + timedelta(microseconds=123456),
            at(0),
            '{"event_id":"e8","note":"\u00e9t\u00e9 \u2603"}',
        ),
    ),
)


def set_state(state: AccountState) -> AccountState:
    """A change that ignores the current state and writes `state`."""
    return state


class ChangeFailed(Exception):
    pass


def append_redemption(offer_id: str) -> AccountChange:
    redemption = Redemption(offer_id, "concurrency", T0, Store.WEB)

    def change(state: AccountState) -> AccountState:
        return dataclasses.replace(state, redemptions=(*state.redemptions, redemption))

    return change


def run_threads(workers: list[threading.Thread]) -> None:
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
        assert not worker.is_alive()


RECORDED = at(1) + timedelta(microseconds=42)


def key(request_id: str, fingerprint: str = "fp-1", kind: str = "redeem") -> IdempotencyKey:
    return IdempotencyKey(kind, request_id, fingerprint)


def redeem(
    offer_id: str,
    calls: list[AccountState] | None = None,
    effective_at: datetime = T0,
    drafts: int = 1,
) -> AccountMutation:
    """Appends a redemption of `offer_id`, answers with JSON-native values (so the response
    compares equal after a round trip through JSON) and appends `drafts` history entries.
    Every call is recorded in `calls`."""
    redemption = Redemption(offer_id, "idem", effective_at, Store.WEB)

    def mutate(state: AccountState) -> Mutation:
        if calls is not None:
            calls.append(state)
        new = dataclasses.replace(state, redemptions=(*state.redemptions, redemption))
        return Mutation(
            new,
            {"offer_id": offer_id, "count": len(new.redemptions), "tags": ["a", "b"]},
            tuple(
                HistoryDraft("redemption", offer_id, effective_at, f"redeemed {offer_id} #{n}")
                for n in range(drafts)
            ),
        )

    return mutate


def run_appliers(count: int, apply_one: Callable[[int], Applied]) -> list[Applied]:
    barrier = threading.Barrier(count)
    results: list[Applied] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        try:
            barrier.wait()
            applied = apply_one(index)
            with lock:
                results.append(applied)
        except BaseException as exc:
            errors.append(exc)

    run_threads([threading.Thread(target=work, args=(i,)) for i in range(count)])
    assert errors == []
    return results


def migration_rows(path: Path) -> list[tuple[int, str]]:
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        return [(int(v), str(n)) for v, n in rows]
    finally:
        connection.close()


def migration_files() -> list[str]:
    directory = Path(sys.modules[SqliteRepository.__module__].__file__ or "").parent
    return sorted(p.stem for p in (directory / "migrations").glob("*.sql"))
