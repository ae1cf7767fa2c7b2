"""Issue 20 through a real server (SQLite and the Spanner emulator): a subscription is the
fold of its kept events. The issue's three reproductions, an event kept PENDING until what
it needs arrives, and GetUserHistory showing each event's effect in the fold."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from entitlements.v1 import admin_service_pb2, admin_service_pb2_grpc, common_pb2
from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements.v1 import subscription_event_service_pb2_grpc as ev_grpc
from tests.support.harness import HARNESS_BACKENDS, NOW, Harness
from tests.support.rpcs import entitled

pytestmark = pytest.mark.parametrize("harness", HARNESS_BACKENDS, indirect=True)

DAY = timedelta(days=1)
PREMIUM = "offline_downloads"


def ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


@pytest.fixture(scope="module")
def writes(harness: Harness) -> ev_grpc.SubscriptionEventServiceStub:
    return ev_grpc.SubscriptionEventServiceStub(harness.admin_channel)


def event(
    user_id: str,
    event_id: str,
    type_: int,
    at: datetime,
    period_end: datetime | None = None,
    refunded: datetime | None = None,
) -> ev.RecordSubscriptionEventRequest:
    request = ev.RecordSubscriptionEventRequest(
        event_id=f"{user_id}-{event_id}",
        user_id=user_id,
        subscription_id=f"{user_id}-sub",
        store=common_pb2.STORE_APP_STORE,
        event_type=type_,  # type: ignore[arg-type]
        occurred_at=ts(at),
        plan_id="premium_individual",
    )
    if period_end is not None:
        request.current_period_end.CopyFrom(ts(period_end))
    if refunded is not None:
        request.refunded_period_end.CopyFrom(ts(refunded))
    return request


def record(
    writes: ev_grpc.SubscriptionEventServiceStub, request: ev.RecordSubscriptionEventRequest
) -> ev.RecordSubscriptionEventResponse:
    response: ev.RecordSubscriptionEventResponse = writes.RecordSubscriptionEvent(
        request, timeout=30
    )
    return response


def test_an_unpaid_extension_does_not_end_a_refund_and_its_reversal_applies(
    harness: Harness, writes: ev_grpc.SubscriptionEventServiceStub
) -> None:
    """Reproduction 1: refund of the current period, then an unpaid PERIOD_EXTENDED.
    Before: ACTIVE until +27 d (access came back), and the reversal was SUPERSEDED."""
    user, end = f"fold-extend-{harness.backend}", NOW + 20 * DAY
    record(writes, event(user, "buy", ev.SUBSCRIPTION_EVENT_TYPE_PURCHASED, NOW - 10 * DAY, end))
    refund = record(
        writes, event(user, "refund", ev.SUBSCRIPTION_EVENT_TYPE_REFUNDED, NOW - 5 * DAY,
                      refunded=end),
    )  # fmt: skip
    assert refund.subscription.status == ev.SUBSCRIPTION_STATUS_REFUNDED
    extended = record(
        writes, event(user, "extend", ev.SUBSCRIPTION_EVENT_TYPE_PERIOD_EXTENDED, NOW - DAY,
                      NOW + 27 * DAY),
    )  # fmt: skip
    assert extended.outcome == ev.EVENT_OUTCOME_APPLIED  # the period end moved...
    assert extended.subscription.status == ev.SUBSCRIPTION_STATUS_REFUNDED  # ...not paid
    assert extended.subscription.current_period_end.ToDatetime().date() == (NOW + 27 * DAY).date()
    assert not entitled(harness, user, PREMIUM, extended.consistency_token)
    reversed_ = record(
        writes, event(user, "reverse", ev.SUBSCRIPTION_EVENT_TYPE_REFUND_REVERSED,
                      NOW - DAY / 2, refunded=end),
    )  # fmt: skip
    assert reversed_.outcome == ev.EVENT_OUTCOME_APPLIED
    assert reversed_.subscription.status == ev.SUBSCRIPTION_STATUS_ACTIVE
    assert entitled(harness, user, PREMIUM, reversed_.consistency_token)


TRIAL_AT, TRIAL_END = NOW - 2.97 * DAY, NOW + 27.03 * DAY


def trial_life(user: str) -> list[ev.RecordSubscriptionEventRequest]:
    return [
        event(user, "trial", ev.SUBSCRIPTION_EVENT_TYPE_TRIAL_STARTED, TRIAL_AT, TRIAL_END),
        event(user, "refund", ev.SUBSCRIPTION_EVENT_TYPE_REFUNDED, NOW - 2.47 * DAY,
              refunded=TRIAL_END),
        event(user, "cancel", ev.SUBSCRIPTION_EVENT_TYPE_CANCELED, NOW - 0.60 * DAY, TRIAL_END),
    ]  # fmt: skip


@pytest.mark.parametrize("order", ["in order", "reversed"])
def test_a_refunded_trial_ends_the_same_in_every_order_and_its_reversal_applies(
    harness: Harness, writes: ev_grpc.SubscriptionEventServiceStub, order: str
) -> None:
    """Reproductions 2 and 3: a free trial refunded, then canceled. Before: in order,
    CANCELED with Premium until +27.03 d; reversed, REFUNDED; and the reversal was refused
    FAILED_PRECONDITION REFUND_NOT_YET_RECORDED on every redelivery."""
    user = f"fold-trial-{harness.backend}-{order.replace(' ', '-')}"
    life = trial_life(user)
    answers = [record(writes, request) for request in (life if order == "in order" else life[::-1])]
    final = answers[-1]
    assert final.subscription.status == ev.SUBSCRIPTION_STATUS_REFUNDED
    assert not entitled(harness, user, PREMIUM, final.consistency_token)
    reversal = event(user, "reverse", ev.SUBSCRIPTION_EVENT_TYPE_REFUND_REVERSED,
                     NOW - 0.3 * DAY, refunded=TRIAL_END)  # fmt: skip
    reversed_ = record(writes, reversal)
    assert reversed_.outcome == ev.EVENT_OUTCOME_APPLIED
    assert reversed_.subscription.status == ev.SUBSCRIPTION_STATUS_CANCELED
    assert entitled(harness, user, PREMIUM, reversed_.consistency_token)
    # A redelivery is a duplicate, not a refusal.
    assert record(writes, reversal).outcome == ev.EVENT_OUTCOME_DUPLICATE


def test_the_reversal_of_a_refunded_trial_is_accepted_not_refused(
    harness: Harness, writes: ev_grpc.SubscriptionEventServiceStub
) -> None:
    """Reproduction 3 on its own: the life in order, then REFUND_REVERSED of the trial's
    period. Before: FAILED_PRECONDITION REFUND_NOT_YET_RECORDED on every redelivery."""
    user = f"fold-reversal-{harness.backend}"
    for request in trial_life(user):
        record(writes, request)
    reversal = event(user, "reverse", ev.SUBSCRIPTION_EVENT_TYPE_REFUND_REVERSED,
                     NOW - 0.3 * DAY, refunded=TRIAL_END)  # fmt: skip
    answer = record(writes, reversal)
    assert answer.outcome == ev.EVENT_OUTCOME_APPLIED
    assert answer.subscription.status == ev.SUBSCRIPTION_STATUS_CANCELED


def test_an_early_event_is_pending_until_what_it_needs_arrives_and_history_says_so(
    harness: Harness, writes: ev_grpc.SubscriptionEventServiceStub
) -> None:
    user, end = f"fold-pending-{harness.backend}", NOW + 25 * DAY
    refund = event(user, "refund", ev.SUBSCRIPTION_EVENT_TYPE_REFUNDED, NOW - DAY, refunded=end)
    pending = record(writes, refund)
    assert pending.outcome == ev.EVENT_OUTCOME_PENDING
    assert not pending.HasField("subscription")
    admin = admin_service_pb2_grpc.AdminServiceStub(harness.admin_channel)
    history = admin.GetUserHistory(
        admin_service_pb2.GetUserHistoryRequest(user_id=user), timeout=30
    )
    ((kept,),) = [history.subscription_events]
    assert (kept.event_id, kept.kind, kept.outcome) == (
        f"{user}-refund", "refunded", ev.EVENT_OUTCOME_PENDING,
    )  # fmt: skip
    assert "not known yet" in kept.why
    bought = record(
        writes, event(user, "buy", ev.SUBSCRIPTION_EVENT_TYPE_PURCHASED, NOW - 5 * DAY, end)
    )
    assert bought.outcome == ev.EVENT_OUTCOME_APPLIED
    assert bought.subscription.status == ev.SUBSCRIPTION_STATUS_REFUNDED
    assert not entitled(harness, user, PREMIUM, bought.consistency_token)
    history = admin.GetUserHistory(
        admin_service_pb2.GetUserHistoryRequest(user_id=user), timeout=30
    )
    effects = {e.event_id: (e.kind, e.outcome) for e in history.subscription_events}
    assert effects == {
        f"{user}-buy": ("purchased", ev.EVENT_OUTCOME_APPLIED),
        f"{user}-refund": ("refunded", ev.EVENT_OUTCOME_APPLIED),
    }
    assert [e.event_id for e in history.subscription_events] == [f"{user}-buy", f"{user}-refund"]
    assert all(e.why and e.HasField("recorded_at") for e in history.subscription_events)
