"""The storage contract of idempotent writes (AccountRepository.apply, storage.apply):
replays, conflicts, writes that change nothing, history, concurrent requests. Every
backend in conftest.BACKENDS must pass these unchanged.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from service.domain.account import AccountState
from service.domain.errors import IdempotencyConflict
from storage.repository import (
    AccountMutation,
    AccountRepository,
    Applied,
    HistoryDraft,
    HistoryEntry,
    Mutation,
)
from tests.contract.builders import (
    RECORDED,
    RICH,
    T0,
    ChangeFailed,
    append_redemption,
    at,
    key,
    redeem,
    run_appliers,
)
from tests.state_writes import write_state


def redeemed(repository: AccountRepository, user_id: str) -> list[str]:
    return [r.offer_id for r in repository.load(user_id).account.redemptions]


def test_apply_writes_bumps_version_and_returns_response(repository: AccountRepository) -> None:
    calls: list[AccountState] = []
    applied = repository.apply("u1", key("r1"), redeem("o1", calls), RECORDED)
    assert calls == [AccountState.new("u1")]
    assert applied.replayed is False
    assert applied.version == 1
    assert applied.response == {"offer_id": "o1", "count": 1, "tags": ["a", "b"]}
    assert applied.state == repository.load("u1").account
    assert applied.state.version == 1
    assert redeemed(repository, "u1") == ["o1"]

    # The next write continues from the stored version, whichever way it is written.
    write_state(repository, "u1", lambda s: s)
    second = repository.apply("u1", key("r2"), redeem("o2", calls), RECORDED)
    assert calls[-1] == dataclasses.replace(applied.state, version=2)
    assert (second.version, second.state.version, second.replayed) == (3, 3, False)
    assert redeemed(repository, "u1") == ["o1", "o2"]


def test_apply_ignores_version_and_user_id_returned_by_mutate(
    repository: AccountRepository,
) -> None:
    def mutate(state: AccountState) -> Mutation:
        return Mutation(dataclasses.replace(state, user_id="other", version=99), {"ok": True})

    applied = repository.apply("u1", key("r1"), mutate, RECORDED)
    assert (applied.state.user_id, applied.state.version, applied.version) == ("u1", 1, 1)
    assert repository.load("other").account == AccountState.new("other")


def test_apply_replay_returns_original_answer_without_writing(
    repository: AccountRepository,
) -> None:
    first = repository.apply("u1", key("r1"), redeem("o1"), RECORDED)
    history = repository.history("u1")
    calls: list[AccountState] = []
    replay = repository.apply("u1", key("r1"), redeem("o1", calls), RECORDED + timedelta(1))
    assert calls == []
    assert replay == Applied(first.state, 1, first.response, replayed=True)
    assert repository.load("u1").account == first.state
    assert repository.history("u1") == history
    # Nothing was written, so the next write is version 2.
    assert write_state(repository, "u1", lambda s: s).version == 2


def test_apply_replay_returns_current_state_with_original_version(
    repository: AccountRepository,
) -> None:
    first = repository.apply("u1", key("r1"), redeem("o1"), RECORDED)
    later = repository.apply("u1", key("r2"), redeem("o2"), RECORDED)
    replay = repository.apply("u1", key("r1"), redeem("o1"), RECORDED)
    assert replay.replayed is True
    assert replay.state == later.state == repository.load("u1").account
    assert (replay.version, replay.response) == (1, first.response)


def test_apply_with_reused_id_and_other_fingerprint_conflicts(
    repository: AccountRepository,
) -> None:
    first = repository.apply("u1", key("r1", "fp-1"), redeem("o1"), RECORDED)
    history = repository.history("u1")
    calls: list[AccountState] = []
    with pytest.raises(IdempotencyConflict):
        repository.apply("u1", key("r1", "fp-2"), redeem("other", calls), RECORDED)
    assert calls == []
    assert repository.load("u1").account == first.state
    assert repository.history("u1") == history
    # The original request is still answered, and the conflicting one still conflicts.
    assert repository.apply("u1", key("r1", "fp-1"), redeem("o1"), RECORDED).replayed is True
    with pytest.raises(IdempotencyConflict):
        repository.apply("u1", key("r1", "fp-2"), redeem("other"), RECORDED)
    assert write_state(repository, "u1", lambda s: s).version == 2


def test_same_id_under_another_kind_is_another_request(repository: AccountRepository) -> None:
    grant = repository.apply("u1", key("id-1", kind="grant"), redeem("o1"), RECORDED)
    revoke = repository.apply("u1", key("id-1", "fp-9", kind="revoke"), redeem("o2"), RECORDED)
    assert (grant.replayed, grant.version) == (False, 1)
    assert (revoke.replayed, revoke.version) == (False, 2)
    assert repository.apply("u1", key("id-1", kind="grant"), redeem("o1"), RECORDED) == Applied(
        revoke.state, 1, grant.response, replayed=True
    )
    assert repository.apply(
        "u1", key("id-1", "fp-9", kind="revoke"), redeem("o2"), RECORDED
    ) == Applied(revoke.state, 2, revoke.response, replayed=True)


def test_idempotency_keys_are_per_user(repository: AccountRepository) -> None:
    a = repository.apply("a", key("r1"), redeem("o1"), RECORDED)
    b = repository.apply("b", key("r1", "fp-other"), redeem("o2"), RECORDED)
    assert (a.replayed, a.version, b.replayed, b.version) == (False, 1, False, 1)
    assert redeemed(repository, "a") == ["o1"]
    assert redeemed(repository, "b") == ["o2"]
    assert [e.reference for e in repository.history("a")] == ["o1"]
    assert [e.reference for e in repository.history("b")] == ["o2"]


def test_exception_in_mutate_propagates_and_keeps_no_key_and_no_history(
    repository: AccountRepository,
) -> None:
    before = repository.apply("u1", key("r0"), redeem("o0"), RECORDED)
    history = repository.history("u1")
    error = ChangeFailed("nope")

    def failing(state: AccountState) -> Mutation:
        raise error

    with pytest.raises(ChangeFailed) as raised:
        repository.apply("u1", key("r1"), failing, RECORDED)
    assert raised.value is error
    assert repository.load("u1").account == before.state
    assert repository.history("u1") == history

    # The key was not kept: the same request runs again and writes this time.
    calls: list[AccountState] = []
    retried = repository.apply("u1", key("r1"), redeem("o1", calls), RECORDED)
    assert calls == [before.state]
    assert (retried.replayed, retried.version) == (False, 2)


def test_exception_in_mutate_for_unknown_user_stores_nothing(
    repository: AccountRepository,
) -> None:
    def failing(state: AccountState) -> Mutation:
        raise ChangeFailed

    with pytest.raises(ChangeFailed):
        repository.apply("ghost", key("r1"), failing, RECORDED)
    assert repository.load("ghost").account == AccountState.new("ghost")
    assert repository.history("ghost") == []
    assert repository.apply("ghost", key("r1"), redeem("o1"), RECORDED).version == 1


def test_history_is_appended_in_order_with_version_and_recorded_at(
    repository: AccountRepository,
) -> None:
    plus_two = timezone(timedelta(hours=2))
    effective = datetime(2024, 3, 1, 8, 0, 0, 7, tzinfo=plus_two)
    # Neither effective nor recording times follow the order of the writes: history is in
    # the order it was appended.
    recorded = [RECORDED + timedelta(hours=n) for n in (2, 0, 3, 1)]
    repository.apply("u1", key("r1"), redeem("o1", effective_at=effective, drafts=2), recorded[0])
    write_state(repository, "u1", lambda s: s)  # version 2, no history
    repository.apply("u1", key("r3"), redeem("o3", drafts=0), recorded[1])  # no history
    repository.apply("u1", key("r4"), redeem("o4", effective_at=at(100)), recorded[2])
    repository.apply("u1", key("r1"), redeem("o1"), recorded[3])  # a replay: no history
    repository.apply("u1", key("r5"), redeem("o5", effective_at=at(-100)), recorded[3])
    repository.apply("other", key("r1"), redeem("o-other"), recorded[3])

    history = repository.history("u1")
    assert history == [
        HistoryEntry("redemption", "o1", effective, recorded[0], 1, "redeemed o1 #0"),
        HistoryEntry("redemption", "o1", effective, recorded[0], 1, "redeemed o1 #1"),
        HistoryEntry("redemption", "o4", at(100), recorded[2], 4, "redeemed o4 #0"),
        HistoryEntry("redemption", "o5", at(-100), recorded[3], 5, "redeemed o5 #0"),
    ]
    assert history[0].effective_at.utcoffset() is not None
    assert history[0].recorded_at.utcoffset() is not None
    assert [e.reference for e in repository.history("other")] == ["o-other"]
    # A copy: changing the list returned does not change the store.
    history.clear()
    assert len(repository.history("u1")) == 4


def test_history_of_unknown_user_is_empty(repository: AccountRepository) -> None:
    assert repository.history("nobody") == []
    write_state(repository, "updated-only", lambda s: s)
    assert repository.history("updated-only") == []


def test_apply_and_update_interleave_with_consistent_versions(
    repository: AccountRepository,
) -> None:
    assert repository.apply("u1", key("r1"), redeem("o1"), RECORDED).version == 1
    assert write_state(repository, "u1", append_redemption("u2")).version == 2
    assert repository.apply("u1", key("r3"), redeem("o3"), RECORDED).version == 3
    replay = repository.apply("u1", key("r1"), redeem("o1"), RECORDED)
    assert (replay.replayed, replay.version, replay.state.version) == (True, 1, 3)
    assert write_state(repository, "u1", append_redemption("u4")).version == 4
    assert repository.apply("u1", key("r5"), redeem("o5"), RECORDED).version == 5
    assert redeemed(repository, "u1") == ["o1", "u2", "o3", "u4", "o5"]
    assert [e.version for e in repository.history("u1")] == [1, 3, 5]


def test_keys_and_history_survive_later_updates_of_the_state(
    repository: AccountRepository,
) -> None:
    first = repository.apply(RICH.user_id, key("r1"), redeem("o1"), RECORDED)
    history = repository.history(RICH.user_id)
    # Rewriting the whole state, then emptying it, keeps what is not part of the state.
    write_state(repository, RICH.user_id, lambda _: RICH)
    write_state(repository, RICH.user_id, lambda _: AccountState.new(RICH.user_id))
    assert repository.history(RICH.user_id) == history
    calls: list[AccountState] = []
    replay = repository.apply(RICH.user_id, key("r1"), redeem("o1", calls), RECORDED)
    assert calls == []
    assert (replay.replayed, replay.version, replay.response) == (True, 1, first.response)
    with pytest.raises(IdempotencyConflict):
        repository.apply(RICH.user_id, key("r1", "fp-2"), redeem("o1"), RECORDED)


def unchanged(
    response: dict[str, object], calls: list[AccountState] | None = None
) -> AccountMutation:
    """A write that changes nothing (Mutation state None), answering `response`."""

    def mutate(state: AccountState) -> Mutation:
        if calls is not None:
            calls.append(state)
        return Mutation.unchanged(response)

    return mutate


def test_a_write_that_changes_nothing_keeps_its_key_at_the_current_version(
    repository: AccountRepository,
) -> None:
    repository.apply("u1", key("r1"), redeem("o1"), RECORDED)
    current = write_state(repository, "u1", append_redemption("u2"))  # version 2
    history = repository.history("u1")
    calls: list[AccountState] = []
    applied = repository.apply("u1", key("r2"), unchanged({"same": [1, 2]}, calls), RECORDED)
    assert calls == [current]
    assert applied == Applied(current, 2, {"same": [1, 2]}, replayed=False)
    # Nothing written: no state, no version, no history.
    assert repository.load("u1").account == current
    assert repository.history("u1") == history
    # The key was kept with its response and that version: a retry replays it...
    calls.clear()
    replay = repository.apply("u1", key("r2"), unchanged({"other": 0}, calls), RECORDED)
    assert calls == []
    assert replay == Applied(current, 2, {"same": [1, 2]}, replayed=True)
    # ...a reused id with other content conflicts...
    with pytest.raises(IdempotencyConflict):
        repository.apply("u1", key("r2", "fp-2"), redeem("o3"), RECORDED)
    # ...and the next write that changes something is the next version, still replayed
    # afterwards with the version of the unchanged write.
    assert repository.apply("u1", key("r3"), redeem("o3"), RECORDED).version == 3
    later = repository.apply("u1", key("r2"), unchanged({}), RECORDED)
    assert (later.replayed, later.version, later.state.version) == (True, 2, 3)
    assert [e.version for e in repository.history("u1")] == [1, 3]
    assert write_state(repository, "u1", lambda s: s).version == 4


def test_writes_that_change_nothing_never_move_the_version(
    repository: AccountRepository,
) -> None:
    first = repository.apply("u1", key("r0"), redeem("o0"), RECORDED)
    results = [
        repository.apply("u1", key(f"r{n}", kind="revoke"), unchanged({"n": n}), RECORDED)
        for n in range(1, 4)
    ]
    assert [(r.version, r.replayed, r.response) for r in results] == [
        (1, False, {"n": n}) for n in range(1, 4)
    ]
    assert all(r.state == first.state for r in results)
    assert repository.load("u1").account == first.state
    assert [e.version for e in repository.history("u1")] == [1]


def test_concurrent_writes_that_change_nothing_all_land_at_one_version(
    repository: AccountRepository,
) -> None:
    repository.apply("hot", key("r0"), redeem("o0"), RECORDED)
    count = 8
    results = run_appliers(
        count, lambda i: repository.apply("hot", key(f"n{i}"), unchanged({"i": i}), RECORDED)
    )
    assert sorted((r.version, r.replayed) for r in results) == [(1, False)] * count
    assert repository.load("hot").account.version == 1
    for i in range(count):
        assert repository.apply("hot", key(f"n{i}"), unchanged({}), RECORDED).response == {"i": i}
    assert len(repository.history("hot")) == 1


def test_a_write_that_changes_nothing_for_an_unknown_user_stores_version_one(
    repository: AccountRepository,
) -> None:
    # The user has no row to keep the key with: their unchanged state is stored.
    applied = repository.apply("ghost", key("r1"), unchanged({"ok": True}), RECORDED)
    assert applied == Applied(
        dataclasses.replace(AccountState.new("ghost"), version=1), 1, {"ok": True}, False
    )
    assert repository.load("ghost").account == applied.state
    assert repository.history("ghost") == []
    assert repository.apply("ghost", key("r1"), unchanged({}), RECORDED) == Applied(
        applied.state, 1, {"ok": True}, replayed=True
    )


def test_a_write_that_changes_nothing_appends_no_history() -> None:
    draft = HistoryDraft("revoke", "g1", T0, "revoked")
    with pytest.raises(ValueError, match="no history"):
        Mutation(None, {}, (draft,))
    assert Mutation.unchanged({"a": 1}) == Mutation(None, {"a": 1}, ())


def test_concurrent_applies_with_distinct_keys_all_land(repository: AccountRepository) -> None:
    count = 16
    results = run_appliers(
        count, lambda i: repository.apply("hot", key(f"r{i}"), redeem(f"o{i}"), RECORDED)
    )
    assert all(not r.replayed for r in results)
    assert sorted(r.version for r in results) == list(range(1, count + 1))
    account = repository.load("hot").account
    assert account.version == count
    assert sorted(redeemed(repository, "hot")) == sorted(f"o{i}" for i in range(count))
    history = repository.history("hot")
    assert [e.version for e in history] == list(range(1, count + 1))
    by_version = {r.version: r.response["offer_id"] for r in results}
    assert [e.reference for e in history] == [by_version[v] for v in range(1, count + 1)]


def test_concurrent_applies_of_one_request_write_once(repository: AccountRepository) -> None:
    count = 16
    results = run_appliers(
        count, lambda _: repository.apply("hot", key("same"), redeem("o1"), RECORDED)
    )
    assert sorted(r.replayed for r in results) == [False] + [True] * (count - 1)
    assert {r.version for r in results} == {1}
    assert all(r.response == results[0].response for r in results)
    assert repository.load("hot").account.version == 1
    assert redeemed(repository, "hot") == ["o1"]
    assert len(repository.history("hot")) == 1
