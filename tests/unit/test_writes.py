"""The write use cases over real stores (memory and SQLite): idempotency, staleness,
tokens, cache invalidation, grants and redemption."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.catalog import load_catalog
from service.domain.account import GrantKind, Store, SubscriptionStatus
from service.domain.errors import IdempotencyConflict, InvalidRequest, NotFound, PreconditionFailed
from service.domain.events import EventOutcome, EventType, SubscriptionEvent
from service.domain.grants import GrantRequest
from service.domain.rules import Platform
from service.usecases.cache import UserStateCache
from service.usecases.reads import Consistency, ReadService
from service.usecases.tokens import parse_token
from service.usecases.writes import RecordStudentVerification, RedeemOffer, WriteService
from storage.memory import MemoryRepository
from storage.repository import AccountRepository
from storage.sqlite import SqliteRepository
from tests.unit.factories import SyncReads, SyncWrites

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CATALOG = load_catalog()
TRIAL = "premium-individual-trial-1m"


@pytest.fixture(params=["memory", "sqlite"])
def repository(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AccountRepository]:
    repo: AccountRepository = (
        MemoryRepository() if request.param == "memory" else SqliteRepository(tmp_path / "w.db")
    )
    yield repo
    repo.close()


@pytest.fixture
def services(repository: AccountRepository) -> tuple[SyncReads, SyncWrites]:
    cache = UserStateCache(1000, 3600)
    clock = lambda: NOW  # noqa: E731
    return (
        SyncReads(ReadService(CATALOG, repository, cache, clock)),
        SyncWrites(WriteService(CATALOG, repository, cache, clock)),
    )


def purchase(event_id: str = "evt-1", at: datetime = NOW - DAY) -> SubscriptionEvent:
    return SubscriptionEvent(
        event_id=event_id,
        subscription_id="sub-1",
        store=Store.GOOGLE_PLAY,
        type=EventType.PURCHASED,
        occurred_at=at,
        plan_id="premium_individual",
        current_period_end=at + 30 * DAY,
        market="DE",
    )


def test_purchase_is_visible_at_once_in_the_writing_process(
    services: tuple[SyncReads, SyncWrites],
) -> None:
    reads, writes = services
    assert not reads.get_entitlement("u1", "offline_downloads").value.granted  # now cached
    answer = writes.record_event("u1", purchase())
    assert answer.outcome is EventOutcome.APPLIED
    assert answer.subscription is not None
    assert answer.subscription.status is SubscriptionStatus.ACTIVE
    # The writer dropped its cache entry: even without the token the read is fresh.
    assert reads.get_entitlement("u1", "offline_downloads").value.granted
    token = Consistency(token=answer.consistency_token)
    assert reads.get_entitlement("u1", "offline_downloads", token).value.granted
    assert parse_token(answer.consistency_token).version == 1


def test_duplicate_event_changes_nothing(
    services: tuple[SyncReads, SyncWrites], repository: AccountRepository
) -> None:
    _, writes = services
    first = writes.record_event("u1", purchase())
    again = writes.record_event("u1", purchase())
    assert again.outcome is EventOutcome.DUPLICATE
    assert again.consistency_token == first.consistency_token
    assert again.subscription == first.subscription
    assert repository.load("u1").account.version == 1
    assert len(repository.history("u1")) == 1


def test_event_id_reused_with_other_content_is_a_conflict(
    services: tuple[SyncReads, SyncWrites],
) -> None:
    _, writes = services
    writes.record_event("u1", purchase())
    with pytest.raises(IdempotencyConflict):
        writes.record_event("u1", purchase(at=NOW - 2 * DAY))


def test_stale_event_is_recorded_but_does_not_move_state_back(
    services: tuple[SyncReads, SyncWrites], repository: AccountRepository
) -> None:
    reads, writes = services
    writes.record_event("u1", purchase())
    renewed = SubscriptionEvent(
        "evt-3", "sub-1", Store.GOOGLE_PLAY, EventType.RENEWED, NOW - DAY / 2,
        plan_id="premium_individual", current_period_end=NOW + 40 * DAY,
    )  # fmt: skip
    writes.record_event("u1", renewed)
    late_failure = SubscriptionEvent(
        "evt-2", "sub-1", Store.GOOGLE_PLAY, EventType.RENEWAL_FAILED, NOW - DAY * 3 / 4,
        grace_period_end=NOW + DAY,
    )  # fmt: skip
    answer = writes.record_event("u1", late_failure)
    assert answer.outcome is EventOutcome.STALE
    assert answer.subscription is not None
    assert answer.subscription.status is SubscriptionStatus.ACTIVE
    assert reads.get_entitlement("u1", "offline_downloads").value.granted
    # Every accepted event is kept (the event set changed: a new version, a history
    # entry); its id is kept, so a redelivery of it is a duplicate.
    assert parse_token(answer.consistency_token).version == 3
    kinds = [(h.reference, h.version) for h in repository.history("u1")]
    assert kinds == [("evt-1", 1), ("evt-3", 2), ("evt-2", 3)]
    kept = repository.load("u1").account.subscription_events
    assert {e.event_id for e in kept} == {"evt-1", "evt-2", "evt-3"}
    again = writes.record_event("u1", late_failure)
    assert again.outcome is EventOutcome.DUPLICATE
    assert again.consistency_token == answer.consistency_token
    # A late event that does add a fact (an earlier start) is written, STALE all the same.
    earlier = SubscriptionEvent(
        "evt-0", "sub-1", Store.GOOGLE_PLAY, EventType.PURCHASED, NOW - 2 * DAY,
        plan_id="premium_individual", current_period_end=NOW + 28 * DAY,
    )  # fmt: skip
    late = writes.record_event("u1", earlier)
    assert late.outcome is EventOutcome.STALE
    assert late.subscription is not None
    assert late.subscription.started_at == NOW - 2 * DAY
    assert parse_token(late.consistency_token).version == 4
    assert [h.reference for h in repository.history("u1")] == ["evt-1", "evt-3", "evt-2", "evt-0"]


def test_an_event_before_what_it_needs_is_kept_pending_then_applies(
    services: tuple[SyncReads, SyncWrites], repository: AccountRepository
) -> None:
    reads, writes = services
    refund = SubscriptionEvent(
        "evt-r", "sub-1", Store.GOOGLE_PLAY, EventType.REFUNDED, NOW - DAY / 2,
        refunded_period_end=NOW + 29 * DAY,  # the end of purchase()'s period
    )  # fmt: skip
    pending = writes.record_event("u1", refund)
    assert pending.outcome is EventOutcome.PENDING
    assert pending.subscription is None
    assert parse_token(pending.consistency_token).version == 1
    # Its redelivery is a duplicate, not a refusal.
    assert writes.record_event("u1", refund).outcome is EventOutcome.DUPLICATE
    bought = writes.record_event("u1", purchase())  # the period the refund names
    assert bought.outcome is EventOutcome.APPLIED
    assert bought.subscription is not None
    assert bought.subscription.status is SubscriptionStatus.REFUNDED
    assert not reads.get_entitlement("u1", "offline_downloads").value.granted


def test_an_event_a_revocation_absorbed_is_kept_superseded(
    services: tuple[SyncReads, SyncWrites], repository: AccountRepository
) -> None:
    _, writes = services
    writes.record_event("u1", purchase())
    revoked = writes.record_event("u1", SubscriptionEvent(
        "evt-2", "sub-1", Store.GOOGLE_PLAY, EventType.REVOKED, NOW - DAY / 2,
    ))  # fmt: skip
    # A later cancel can never apply: SUPERSEDED, kept all the same.
    late = writes.record_event("u1", SubscriptionEvent(
        "evt-3", "sub-1", Store.GOOGLE_PLAY, EventType.CANCELED, NOW - DAY / 4,
        plan_id="premium_individual",
    ))  # fmt: skip
    assert late.outcome is EventOutcome.SUPERSEDED
    assert late.subscription == revoked.subscription
    assert repository.load("u1").account.version == 3
    assert [h.reference for h in repository.history("u1")] == ["evt-1", "evt-2", "evt-3"]


def test_an_event_of_an_unknown_subscription_is_kept_pending(
    services: tuple[SyncReads, SyncWrites], repository: AccountRepository
) -> None:
    """Once refused FAILED_PRECONDITION (SUBSCRIPTION_NOT_YET_KNOWN, a store redelivered
    it): now kept, PENDING, with no subscription until one event gives its period end."""
    _, writes = services
    uncancel = SubscriptionEvent(
        "evt-9", "sub-1", Store.WEB, EventType.UNCANCELED, NOW - DAY, plan_id="premium_duo"
    )
    answer = writes.record_event("u1", uncancel)
    assert answer.outcome is EventOutcome.PENDING
    assert answer.subscription is None
    account = repository.load("u1").account
    assert account.subscriptions == ()
    assert [e.event_id for e in account.subscription_events] == ["evt-9"]


def test_grant_and_revoke_are_idempotent(
    services: tuple[SyncReads, SyncWrites], repository: AccountRepository
) -> None:
    reads, writes = services
    request = GrantRequest(GrantKind.SUPPORT, "high_fidelity_audio", None, 0, NOW, NOW + 7 * DAY)
    granted = writes.grant("req-1", "u1", request)
    assert writes.grant("req-1", "u1", request).grant == granted.grant
    assert reads.get_entitlement("u1", "high_fidelity_audio").value.granted
    revoked = writes.revoke("req-2", "u1", granted.grant.grant_id)
    assert revoked.grant.revoked_at == NOW
    assert not reads.get_entitlement("u1", "high_fidelity_audio").value.granted
    # Revoking again (new request id) succeeds and writes nothing: same version, no history.
    again = writes.revoke("req-3", "u1", granted.grant.grant_id)
    assert again.grant.revoked_at == NOW
    assert again.consistency_token == revoked.consistency_token
    assert repository.load("u1").account.version == 2
    # Its request id is kept: a retry replays it, another revoke with it conflicts.
    assert writes.revoke("req-3", "u1", granted.grant.grant_id) == again
    with pytest.raises(IdempotencyConflict):
        writes.revoke("req-3", "u1", "grant-other")
    with pytest.raises(NotFound):
        writes.revoke("req-4", "u1", "grant-nope")
    assert [h.kind for h in repository.history("u1")] == ["grant", "revoke"]


def test_grant_validation(services: tuple[SyncReads, SyncWrites]) -> None:
    _, writes = services
    bad = GrantRequest(None, "teleportation", None, -1, NOW, NOW - DAY)
    with pytest.raises(InvalidRequest) as raised:
        writes.grant("", "u1", bad)
    assert [v.field for v in raised.value.violations] == ["request_id"]
    with pytest.raises(InvalidRequest) as raised:
        writes.grant("req", "u1", bad)
    assert [v.field for v in raised.value.violations] == [
        "grant.kind",
        "grant.feature_id",
        "grant.quota_value",
        "grant.expires_at",
    ]


def test_redeem_trial_once(services: tuple[SyncReads, SyncWrites]) -> None:
    reads, writes = services
    answer = writes.redeem(
        RedeemOffer("r1", "u1", TRIAL, "US", Platform.IOS, Store.APP_STORE, "sub-t")
    )
    assert answer.subscription.status is SubscriptionStatus.TRIALING
    assert answer.subscription.current_period_end == NOW + 30 * DAY
    assert reads.get_entitlement("u1", "offline_downloads").value.granted
    # The same request again is a replay, not a second trial.
    again = writes.redeem(
        RedeemOffer("r1", "u1", TRIAL, "US", Platform.IOS, Store.APP_STORE, "sub-t")
    )
    assert again.subscription == answer.subscription
    with pytest.raises(PreconditionFailed) as raised:
        writes.redeem(RedeemOffer("r2", "u1", TRIAL, "US", Platform.IOS, Store.APP_STORE, "sub-u"))
    assert raised.value.reason.name == "HAD_PREMIUM_BEFORE"
    offers = reads.get_offers("u1", "US", Platform.IOS).value
    assert all(e.offer.group != "trial" for e in offers.eligible)


def test_concurrent_trial_redemptions_have_one_winner(
    services: tuple[SyncReads, SyncWrites],
) -> None:
    _, writes = services

    async def attempt(i: int) -> str:
        command = RedeemOffer(f"r{i}", "u1", TRIAL, "SE", Platform.WEB, Store.WEB, f"sub-{i}")
        try:
            await writes.service.redemptions.redeem(command)
        except PreconditionFailed as error:
            return error.reason.name
        return "OK"

    async def all_at_once() -> list[str]:
        # Each runs in a store thread of the pool, as concurrent RPCs do.
        return list(await asyncio.gather(*(attempt(i) for i in range(20))))

    results = asyncio.run(all_at_once())
    assert results.count("OK") == 1
    assert set(results) - {"OK"} == {"HAD_PREMIUM_BEFORE"}


def test_a_command_names_every_bad_field_at_once() -> None:
    command = RedeemOffer("", "u1", "no-such-offer", "se", None, None, "")
    with pytest.raises(InvalidRequest) as raised:
        command.validate(CATALOG)
    assert [v.field for v in raised.value.violations] == [
        "request_id",
        "offer_id",
        "market",
        "platform",
        "store",
        "subscription_id",
    ]
    valid = RedeemOffer("r1", "u1", TRIAL, "SE", Platform.WEB, Store.WEB, "sub-1")
    assert valid.validate(CATALOG) == (Platform.WEB, Store.WEB)


def test_a_student_verification_must_end_in_the_future() -> None:
    past = RecordStudentVerification("r1", "u1", NOW - DAY, "provider-1")
    with pytest.raises(InvalidRequest) as raised:
        past.validate(NOW)
    assert [v.description for v in raised.value.violations] == ["must be in the future"]
    unset = RecordStudentVerification("r1", "", None, "provider-1")
    with pytest.raises(InvalidRequest) as raised:
        unset.validate(NOW)
    assert [v.field for v in raised.value.violations] == ["user_id", "verified_until"]
    assert RecordStudentVerification("r1", "u1", NOW + DAY, "p").validate(NOW) == NOW + DAY
