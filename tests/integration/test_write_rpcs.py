"""The write RPCs through a real server: idempotency, out-of-order events, atomic offer
redemption, error statuses, and reads that see a write through its consistency token."""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.rpc import error_details_pb2

from entitlements.v1 import common_pb2
from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements.v1 import subscription_event_service_pb2_grpc as ev_grpc
from tests.support.harness import HARNESS_BACKENDS, NOW, Harness
from tests.support.rpcs import DAY, details_of, entitled, event, ts

pytestmark = pytest.mark.parametrize("harness", HARNESS_BACKENDS, indirect=True)

T0 = NOW - 100 * DAY


@pytest.fixture(scope="module")
def writes(harness: Harness) -> ev_grpc.SubscriptionEventServiceStub:
    return ev_grpc.SubscriptionEventServiceStub(harness.admin_channel)


def life(user_id: str) -> list[ev.RecordSubscriptionEventRequest]:
    """A realistic life: trial, conversion, failed renewal, recovery, cancellation."""
    return [
        event(user_id, f"{user_id}-1", ev.SUBSCRIPTION_EVENT_TYPE_TRIAL_STARTED, T0, T0 + 30 * DAY,
              offer_id="premium-individual-trial-1m", market="BR"),
        event(user_id, f"{user_id}-2", ev.SUBSCRIPTION_EVENT_TYPE_RENEWED, T0 + 30 * DAY,
              T0 + 60 * DAY),
        event(user_id, f"{user_id}-3", ev.SUBSCRIPTION_EVENT_TYPE_RENEWAL_FAILED, T0 + 60 * DAY,
              T0 + 60 * DAY, grace_period_end=ts(T0 + 67 * DAY)),
        event(user_id, f"{user_id}-4", ev.SUBSCRIPTION_EVENT_TYPE_RENEWED, T0 + 62 * DAY,
              T0 + 122 * DAY),
        event(user_id, f"{user_id}-5", ev.SUBSCRIPTION_EVENT_TYPE_CANCELED, T0 + 80 * DAY,
              T0 + 122 * DAY),
    ]  # fmt: skip


def deliver(
    writes: ev_grpc.SubscriptionEventServiceStub, events: list[ev.RecordSubscriptionEventRequest]
) -> ev.Subscription:
    """Delivers like a store; every event is accepted the first time (an early one is
    PENDING, never refused)."""
    last: ev.Subscription | None = None
    for request in events:
        last = writes.RecordSubscriptionEvent(request, timeout=5).subscription
    assert last is not None
    return last


def without_ids(sub: ev.Subscription) -> ev.Subscription:
    copy = ev.Subscription()
    copy.CopyFrom(sub)
    copy.subscription_id = ""
    return copy


def test_purchase_flips_entitlement_with_its_token(
    harness: Harness, writes: ev_grpc.SubscriptionEventServiceStub
) -> None:
    assert not entitled(harness, "buyer", "offline_downloads")
    request = event(
        "buyer", "buyer-1", ev.SUBSCRIPTION_EVENT_TYPE_PURCHASED, NOW - DAY, NOW + 29 * DAY
    )
    response = writes.RecordSubscriptionEvent(request, timeout=5)
    assert response.outcome == ev.EVENT_OUTCOME_APPLIED
    assert response.subscription.status == ev.SUBSCRIPTION_STATUS_ACTIVE
    assert entitled(harness, "buyer", "offline_downloads", response.consistency_token)

    again = writes.RecordSubscriptionEvent(request, timeout=5)
    assert again.outcome == ev.EVENT_OUTCOME_DUPLICATE
    assert again.consistency_token == response.consistency_token
    assert again.subscription == response.subscription

    reused = event(
        "buyer", "buyer-1", ev.SUBSCRIPTION_EVENT_TYPE_PURCHASED, NOW - 2 * DAY, NOW + DAY
    )
    with pytest.raises(grpc.RpcError) as raised:
        writes.RecordSubscriptionEvent(reused, timeout=5)
    assert raised.value.code() is grpc.StatusCode.ALREADY_EXISTS


def test_every_order_of_a_life_ends_in_the_same_state(
    harness: Harness, writes: ev_grpc.SubscriptionEventServiceStub
) -> None:
    expected = without_ids(deliver(writes, life("perm-reference")))
    assert expected.status == ev.SUBSCRIPTION_STATUS_CANCELED
    assert not expected.auto_renew
    orders = list(itertools.permutations(range(5)))
    if harness.backend == "spanner":
        # The emulator serialises read-write transactions (~10 ms a write RPC here, 10 s
        # for all 120 orders): every 4th order there, 30 in which each event is first 6 times.
        orders = orders[::4]
    for index, order in enumerate(orders):
        user = f"perm-{index}"
        events = life(user)
        final = deliver(writes, [events[i] for i in order])
        assert without_ids(final) == expected, order
        # Late redeliveries of any event are duplicates and change nothing.
        again = writes.RecordSubscriptionEvent(events[order[0]], timeout=5)
        assert again.outcome == ev.EVENT_OUTCOME_DUPLICATE
        assert without_ids(again.subscription) == expected
    # A canceled subscription still entitles until its period end (NOW + 22 days).
    assert entitled(harness, "perm-0", "offline_downloads")


def test_late_renewal_failure_is_stale(
    harness: Harness, writes: ev_grpc.SubscriptionEventServiceStub
) -> None:
    events = life("late")
    deliver(writes, [events[0], events[1], events[3]])
    response = writes.RecordSubscriptionEvent(events[2], timeout=5)
    assert response.outcome == ev.EVENT_OUTCOME_STALE
    assert response.subscription.status == ev.SUBSCRIPTION_STATUS_ACTIVE
    assert entitled(harness, "late", "ad_free_playback", response.consistency_token)


def test_bad_events_get_statuses_with_details(
    writes: ev_grpc.SubscriptionEventServiceStub,
) -> None:
    unknown_plan = event(
        "bad", "bad-1", ev.SUBSCRIPTION_EVENT_TYPE_PURCHASED, NOW, NOW + DAY, plan="gold"
    )
    with pytest.raises(grpc.RpcError) as raised:
        writes.RecordSubscriptionEvent(unknown_plan, timeout=5)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    (bad_request,) = details_of(raised.value)
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["plan_id"]

    # Too early, not wrong: a cancel without plan and period end for a subscription whose
    # purchase has not arrived. Kept, PENDING (no error a store would redeliver forever).
    early = event("bad", "bad-2", ev.SUBSCRIPTION_EVENT_TYPE_CANCELED, NOW, NOW + DAY)
    early.ClearField("current_period_end")
    early.plan_id = ""
    answer = writes.RecordSubscriptionEvent(early, timeout=5)
    assert answer.outcome == ev.EVENT_OUTCOME_PENDING
    assert not answer.HasField("subscription")


def test_grant_and_revoke(harness: Harness, writes: ev_grpc.SubscriptionEventServiceStub) -> None:
    grant = ev.Grant(kind=ev.GRANT_KIND_PROMOTIONAL, feature_id="high_fidelity_audio")
    granted = writes.GrantEntitlement(
        ev.GrantEntitlementRequest(request_id="g-1", user_id="promo-user", grant=grant), timeout=5
    )
    assert granted.grant.grant_id
    assert granted.grant.HasField("starts_at")
    assert entitled(harness, "promo-user", "high_fidelity_audio", granted.consistency_token)
    revoke = ev.RevokeEntitlementRequest(
        request_id="r-1", user_id="promo-user", grant_id=granted.grant.grant_id
    )
    revoked = writes.RevokeEntitlement(revoke, timeout=5)
    assert revoked.grant.HasField("revoked_at")
    assert not entitled(harness, "promo-user", "high_fidelity_audio", revoked.consistency_token)
    with pytest.raises(grpc.RpcError) as raised:
        writes.RevokeEntitlement(
            ev.RevokeEntitlementRequest(request_id="r-2", user_id="promo-user", grant_id="nope"),
            timeout=5,
        )
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND


def test_fifty_concurrent_trial_redemptions_have_exactly_one_winner(
    writes: ev_grpc.SubscriptionEventServiceStub,
) -> None:
    attempts = 50
    barrier = threading.Barrier(attempts)

    def redeem(i: int) -> str:
        request = ev.RedeemOfferRequest(
            request_id=f"redeem-{i}",
            user_id="trial-racer",
            offer_id="premium-individual-trial-1m",
            market="US",
            platform=common_pb2.PLATFORM_IOS,
            store=common_pb2.STORE_APP_STORE,
            subscription_id=f"racer-sub-{i}",
        )
        barrier.wait()
        try:
            writes.RedeemOffer(request, timeout=30)
        except grpc.RpcError as error:
            refusal = error
        else:
            return "OK"
        assert refusal.code() is grpc.StatusCode.FAILED_PRECONDITION
        info = details_of(refusal)[0]
        assert isinstance(info, error_details_pb2.ErrorInfo)
        return str(info.reason)

    with ThreadPoolExecutor(attempts) as pool:
        results = list(pool.map(redeem, range(attempts)))
    assert results.count("OK") == 1
    assert set(results) - {"OK"} <= {"HAD_PREMIUM_BEFORE", "GROUP_ALREADY_REDEEMED"}


# -- issue 12 ----------------------------------------------------------------------------


def history_versions(harness: Harness, user_id: str) -> list[int]:
    store = harness.open_store()
    try:
        return [entry.version for entry in store.history(user_id)]
    finally:
        store.close()


@pytest.mark.parametrize(
    "loss", [ev.SUBSCRIPTION_EVENT_TYPE_REFUNDED, ev.SUBSCRIPTION_EVENT_TYPE_REVOKED]
)
def test_a_late_refund_still_ends_access(
    harness: Harness, writes: ev_grpc.SubscriptionEventServiceStub, loss: int
) -> None:
    """Problem 1: purchase, refund at day -3, auto-renew off at day -1: both delivery
    orders end refunded, and neither is refused."""
    start, end = NOW - 20 * DAY, NOW + 10 * DAY
    finals = []
    for order in ("refund-first", "cancel-first"):
        user = f"late-refund-{loss}-{order}"
        purchase = event(user, f"{user}-p", ev.SUBSCRIPTION_EVENT_TYPE_PURCHASED, start, end)
        refund = event(user, f"{user}-r", loss, NOW - 3 * DAY, end, refunded_period_end=ts(end))
        cancel = event(user, f"{user}-c", ev.SUBSCRIPTION_EVENT_TYPE_CANCELED, NOW - DAY, end)
        writes.RecordSubscriptionEvent(purchase, timeout=5)
        pair = [refund, cancel] if order == "refund-first" else [cancel, refund]
        answers = [writes.RecordSubscriptionEvent(r, timeout=5) for r in pair]
        final = answers[-1]
        assert not entitled(harness, user, "offline_downloads", final.consistency_token)
        finals.append(without_ids(final.subscription))
    assert finals[0] == finals[1]
    assert finals[0].status in (ev.SUBSCRIPTION_STATUS_REFUNDED, ev.SUBSCRIPTION_STATUS_REVOKED)


def test_a_cancel_during_account_hold_is_accepted_not_redelivered_forever(
    harness: Harness, writes: ev_grpc.SubscriptionEventServiceStub
) -> None:
    """Problem 2: an event that can never change access is answered, not refused."""
    user = "held-cancel"
    end = NOW - 10 * DAY
    deliver(writes, [
        event(user, f"{user}-p", ev.SUBSCRIPTION_EVENT_TYPE_PURCHASED, end - 30 * DAY, end),
        event(user, f"{user}-h", ev.SUBSCRIPTION_EVENT_TYPE_ON_HOLD, end + DAY, end),
    ])  # fmt: skip
    cancel = writes.RecordSubscriptionEvent(
        event(user, f"{user}-c", ev.SUBSCRIPTION_EVENT_TYPE_CANCELED, NOW - DAY, end), timeout=5
    )
    assert cancel.outcome == ev.EVENT_OUTCOME_APPLIED
    assert not cancel.subscription.auto_renew
    assert not entitled(harness, user, "offline_downloads", cancel.consistency_token)
    # After a revocation, a later renewal can never apply: SUPERSEDED, recorded.
    revoke = writes.RecordSubscriptionEvent(
        event(user, f"{user}-v", ev.SUBSCRIPTION_EVENT_TYPE_REVOKED, NOW - DAY / 2, end),
        timeout=5,
    )
    late = writes.RecordSubscriptionEvent(
        event(user, f"{user}-n", ev.SUBSCRIPTION_EVENT_TYPE_RENEWED, NOW - DAY / 4, NOW + DAY),
        timeout=5,
    )
    assert late.outcome == ev.EVENT_OUTCOME_SUPERSEDED
    assert late.subscription.status == ev.SUBSCRIPTION_STATUS_REVOKED
    assert not entitled(harness, user, "offline_downloads", late.consistency_token)
    assert revoke.consistency_token != late.consistency_token  # recorded


def test_refunding_last_month_keeps_this_months_access(
    harness: Harness, writes: ev_grpc.SubscriptionEventServiceStub
) -> None:
    """Problem 3: refunds are per transaction; a reversal restores what a refund took."""
    user = "per-period"
    p1, p2 = NOW - 5 * DAY, NOW + 25 * DAY
    deliver(writes, [
        event(user, f"{user}-p", ev.SUBSCRIPTION_EVENT_TYPE_PURCHASED, p1 - 30 * DAY, p1),
        event(user, f"{user}-r", ev.SUBSCRIPTION_EVENT_TYPE_RENEWED, p1, p2),
    ])  # fmt: skip
    past = writes.RecordSubscriptionEvent(
        event(user, f"{user}-x1", ev.SUBSCRIPTION_EVENT_TYPE_REFUNDED, NOW - DAY, p2,
              refunded_period_end=ts(p1)), timeout=5)  # fmt: skip
    assert past.outcome == ev.EVENT_OUTCOME_SUPERSEDED
    assert entitled(harness, user, "offline_downloads", past.consistency_token)
    current = writes.RecordSubscriptionEvent(
        event(user, f"{user}-x2", ev.SUBSCRIPTION_EVENT_TYPE_REFUNDED, NOW - DAY / 2, p2,
              refunded_period_end=ts(p2)), timeout=5)  # fmt: skip
    assert current.subscription.status == ev.SUBSCRIPTION_STATUS_REFUNDED
    assert not entitled(harness, user, "offline_downloads", current.consistency_token)
    reversal = writes.RecordSubscriptionEvent(
        event(user, f"{user}-x3", ev.SUBSCRIPTION_EVENT_TYPE_REFUND_REVERSED, NOW - DAY / 4, p2,
              refunded_period_end=ts(p2)), timeout=5)  # fmt: skip
    assert reversal.subscription.status == ev.SUBSCRIPTION_STATUS_ACTIVE
    assert entitled(harness, user, "offline_downloads", reversal.consistency_token)


def test_the_student_offer_bills_its_catalog_period(
    harness: Harness, writes: ev_grpc.SubscriptionEventServiceStub
) -> None:
    """Problem 4: the 365-day student offer ends its first period at +365 days (the
    demo's verified student). Other offers' periods come from their durations too."""
    answer = writes.RedeemOffer(
        ev.RedeemOfferRequest(
            request_id="student-offer-1",
            user_id="demo-student",
            offer_id="premium-student-12m",
            market="US",
            platform=common_pb2.PLATFORM_WEB,
            store=common_pb2.STORE_WEB,
            subscription_id="student-sub-1",
        ),
        timeout=5,
    )
    period = answer.subscription.current_period_end.ToDatetime() - NOW.replace(tzinfo=None)
    assert period == 365 * DAY


def test_revoking_a_revoked_grant_writes_nothing(
    harness: Harness, writes: ev_grpc.SubscriptionEventServiceStub
) -> None:
    """Problem 5: no new version, no new token, no history entry."""
    user = "revoke-twice"
    grant = ev.Grant(kind=ev.GRANT_KIND_SUPPORT, feature_id="offline_downloads")
    granted = writes.GrantEntitlement(
        ev.GrantEntitlementRequest(request_id=f"{user}-g", user_id=user, grant=grant), timeout=5
    )
    first = writes.RevokeEntitlement(
        ev.RevokeEntitlementRequest(
            request_id=f"{user}-r1", user_id=user, grant_id=granted.grant.grant_id
        ),
        timeout=5,
    )
    before = history_versions(harness, user)
    second = writes.RevokeEntitlement(
        ev.RevokeEntitlementRequest(
            request_id=f"{user}-r2", user_id=user, grant_id=granted.grant.grant_id
        ),
        timeout=5,
    )
    assert second.consistency_token == first.consistency_token
    assert second.grant == first.grant
    assert history_versions(harness, user) == before


def test_writes_that_change_nothing_keep_the_version_and_the_history(
    harness: Harness, writes: ev_grpc.SubscriptionEventServiceStub
) -> None:
    """Problem 5: an event redelivered under another id that adds no new fact, and a
    second revoke, leave the version (the token) and the history as they were; their
    request ids are kept all the same."""
    user = "no-change"
    events = life(user)
    deliver(writes, events)
    last = writes.RecordSubscriptionEvent(events[-1], timeout=5)  # the same id: DUPLICATE
    before = history_versions(harness, user)
    for n, original in enumerate(events):
        copy = ev.RecordSubscriptionEventRequest()
        copy.CopyFrom(original)
        copy.event_id = f"{user}-redelivered-{n}"
        again = writes.RecordSubscriptionEvent(copy, timeout=5)
        assert again.outcome == ev.EVENT_OUTCOME_STALE, n
        assert again.consistency_token == last.consistency_token, n
        assert again.subscription == last.subscription, n
        # Its id is kept: delivered once more, it is a duplicate.
        dup = writes.RecordSubscriptionEvent(copy, timeout=5)
        assert dup.outcome == ev.EVENT_OUTCOME_DUPLICATE
        assert dup.consistency_token == last.consistency_token
    assert history_versions(harness, user) == before

    grants = [
        writes.GrantEntitlement(
            ev.GrantEntitlementRequest(
                request_id=f"{user}-g{n}",
                user_id=user,
                grant=ev.Grant(kind=ev.GRANT_KIND_SUPPORT, feature_id="high_fidelity_audio"),
            ),
            timeout=5,
        ).grant
        for n in (1, 2)
    ]

    def revoke(request_id: str, grant_id: str) -> ev.RevokeEntitlementResponse:
        request = ev.RevokeEntitlementRequest(
            request_id=request_id, user_id=user, grant_id=grant_id
        )
        return writes.RevokeEntitlement(request, timeout=5)

    first = revoke(f"{user}-r1", grants[0].grant_id)
    before = history_versions(harness, user)
    second = revoke(f"{user}-r2", grants[0].grant_id)
    assert second.consistency_token == first.consistency_token
    assert second.grant == first.grant
    assert history_versions(harness, user) == before
    # The second revoke's request id was recorded: reused for another grant it is
    # refused, and that grant stays granted.
    with pytest.raises(grpc.RpcError) as raised:
        revoke(f"{user}-r2", grants[1].grant_id)
    assert raised.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert entitled(harness, user, "high_fidelity_audio", first.consistency_token)
    assert history_versions(harness, user) == before
