"""The specification of a subscription's lifecycle: a reference model written from the
rules of the fold (service/domain/events/__init__.py docstring, docs/SUBSCRIPTION_FOLD.md) without
calling the production code, and generated realistic lives (trials and their refunds,
renewals, failures with grace, account hold, pauses, plan changes, cancel and uncancel,
period extensions, refunds and reversals in any order, revocations) delivered in
permutations chosen by hypothesis, with redeliveries under the same and under new ids.

For each life and each delivery order: every event is accepted at once (none refused),
the end state equals the oracle's, the premium decision at sampled times equals the
oracle's, and compacting any part of the kept events changes nothing.

The default suite runs a short search (ORACLE_EXAMPLES, default 40);
tests/fuzz/test_fuzz_lifecycle.py runs it long under `make fuzz` (FUZZ_EXAMPLES).
"""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.domain.events import (
    EventType,
    compact,
    events_of,
    fold,
    subscription_of,
)
from tests.support.lifecycle import (
    DAY,
    LIVES_PER_EXAMPLE,
    NOW,
    T0,
    Life,
    build_life,
    check,
    deliver,
    oracle,
    redelivered,
)

EXAMPLES = int(os.environ.get("ORACLE_EXAMPLES", "40"))
ORACLE_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@ORACLE_SETTINGS
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_every_delivery_order_matches_the_oracle(seed: int, data: st.DataObject) -> None:
    """A few lives per example (interesting end states are a few percent of lives), each
    delivered in a permutation hypothesis chooses, with redeliveries."""
    rng = random.Random(seed)
    for _ in range(LIVES_PER_EXAMPLE):
        life = build_life(rng)
        events = redelivered(life, rng)
        renamed = [e for e in events if e.event_id.endswith("-again")]
        check([*life.events, *renamed], data.draw(st.permutations(events)))


@ORACLE_SETTINGS
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_a_snapshot_of_any_part_folds_like_the_part(seed: int, data: st.DataObject) -> None:
    """fold(snapshot(part) + rest) == fold(all), for any split of the kept events (the
    merge is commutative), and snapshots of snapshots too."""
    life = build_life(random.Random(seed))
    account = deliver(life.events)
    entries = events_of(account, "sub")
    chosen = data.draw(st.sets(st.sampled_from(range(len(entries)))))
    part = [e for i, e in enumerate(entries) if i in chosen]
    rest = [e for i, e in enumerate(entries) if i not in chosen]
    once = compact(part, NOW, keep=0) if part else []
    twice = compact([*once, *rest], NOW, keep=data.draw(st.integers(0, 3)))
    whole = fold(entries)
    assert subscription_of("sub", fold([*once, *rest])) == subscription_of("sub", whole)
    assert subscription_of("sub", fold(twice)) == subscription_of("sub", whole)
    assert fold([*once, *rest]) == whole


def test_the_oracle_decides_the_issue_lives() -> None:
    """Issue 20's lives and issue 12's first one, by hand, against the oracle."""
    refund_first = Life()
    refund_first.add(EventType.PURCHASED, T0, current_period_end=T0 + 30 * DAY)
    refund_first.add(EventType.REFUNDED, T0 + 27 * DAY, refunded_period_end=T0 + 30 * DAY)
    refund_first.add(EventType.CANCELED, T0 + 29 * DAY, current_period_end=T0 + 30 * DAY)
    state = oracle(refund_first.events)
    assert state is not None
    assert state.status == "refunded"
    extended = Life()  # refund, then an unpaid extension: still refunded
    extended.add(EventType.PURCHASED, T0, current_period_end=T0 + 30 * DAY)
    extended.add(EventType.REFUNDED, T0 + 5 * DAY, refunded_period_end=T0 + 30 * DAY)
    extended.add(EventType.PERIOD_EXTENDED, T0 + 9 * DAY, current_period_end=T0 + 57 * DAY)
    state = oracle(extended.events)
    assert state is not None
    assert state.status == "refunded"
    assert state.period_end == T0 + 57 * DAY
    trial_only = Life()  # a refunded trial: refunded
    trial_only.add(EventType.TRIAL_STARTED, T0, current_period_end=T0 + 30 * DAY)
    trial_only.add(EventType.REFUNDED, T0 + DAY, refunded_period_end=T0 + 30 * DAY)
    state = oracle(trial_only.events)
    assert state is not None
    assert state.status == "refunded"
    trial = Life()  # a refunded trial, canceled later: refunded
    trial.add(EventType.TRIAL_STARTED, T0, current_period_end=T0 + 30 * DAY)
    trial.add(EventType.REFUNDED, T0 + DAY / 2, refunded_period_end=T0 + 30 * DAY)
    trial.add(EventType.CANCELED, T0 + 2 * DAY, current_period_end=T0 + 30 * DAY)
    state = oracle(trial.events)
    assert state is not None
    assert state.status == "refunded"
    trial.add(EventType.REFUND_REVERSED, T0 + 3 * DAY, refunded_period_end=T0 + 30 * DAY)
    state = oracle(trial.events)
    assert state is not None
    assert state.status == "canceled"
    for life in (refund_first, extended, trial_only, trial):
        for seed in range(6):
            delivered = list(life.events)
            random.Random(seed).shuffle(delivered)
            check(life.events, delivered)


def test_the_generated_lives_cover_the_cases_of_the_issue() -> None:
    """The generator is worth its search: among 300 lives there are refunded trials,
    refunds of extended periods, same-instant reversals, plan changes, holds, pauses and
    revocations, and lives the oracle ends refunded."""
    seen: set[str] = set()
    for seed in range(300):
        life = build_life(random.Random(seed))
        types = {e.type for e in life.events}
        refunded = {e.refunded_period_end for e in life.events if e.type is EventType.REFUNDED}
        trial_end = life.events[0].current_period_end
        if life.events[0].type is EventType.TRIAL_STARTED and trial_end in refunded:
            seen.add("trial refund")
        extended = {
            e.current_period_end for e in life.events if e.type is EventType.PERIOD_EXTENDED
        }
        if extended & refunded:
            seen.add("extended period refunded")
        reversals = [e for e in life.events if e.type is EventType.REFUND_REVERSED]
        refunds = {(e.refunded_period_end, e.occurred_at) for e in life.events
                   if e.type is EventType.REFUNDED}  # fmt: skip
        if any((r.refunded_period_end, r.occurred_at) in refunds for r in reversals):
            seen.add("same-instant reversal")
        for kind in (EventType.PLAN_CHANGED, EventType.ON_HOLD, EventType.GRACE_EXPIRED,
                     EventType.PAUSED, EventType.REVOKED):  # fmt: skip
            if kind in types:
                seen.add(kind.value)
        state = oracle(life.events)
        if state is not None and state.status == "refunded":
            seen.add("ends refunded")
    assert seen >= {
        "trial refund", "extended period refunded", "same-instant reversal", "plan_changed",
        "grace_expired", "paused", "revoked", "ends refunded",
    }, seen  # fmt: skip
