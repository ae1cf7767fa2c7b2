"""Which token-less misses may read at bounded staleness (service.usecases.stale_reads):
only users the change feed has seen no change of within the window, at least the
version it told of, and nobody while the follower is behind, lost, or just past a gap."""

from __future__ import annotations

from service.usecases.stale_reads import StaleReadGate
from storage.feed import Change


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gate(following: list[bool] | None = None) -> tuple[StaleReadGate, Clock]:
    clock = Clock()
    state = following if following is not None else [True]
    return StaleReadGate(lambda: state[0], window_seconds=15.0, monotonic=clock), clock


def test_nobody_is_vouched_for_until_the_follower_has_followed_for_a_window() -> None:
    reads, clock = gate()
    assert reads.floor("quiet") is None  # changes before the start are unknown
    clock.now += 15.1
    assert reads.floor("quiet") == 0


def test_a_recent_change_sets_the_version_to_reach_until_the_window_passes() -> None:
    reads, clock = gate()
    clock.now += 20
    reads.on_changes([Change("buyer", 3), Change("buyer", 5), Change("buyer", 4)])
    assert reads.floor("buyer") == 5
    clock.now += 14
    assert reads.floor("buyer") == 5
    clock.now += 2
    assert reads.floor("buyer") == 0
    assert reads.floor("someone-else") == 0


def test_a_household_member_changed_without_a_version_reads_strongly() -> None:
    reads, clock = gate()
    clock.now += 20
    reads.on_changes([Change("member", 2), Change("member", None)])
    assert reads.floor("member") is None
    clock.now += 16
    assert reads.floor("member") == 0


def test_a_gap_or_a_lost_feed_vouches_for_nobody_for_a_window() -> None:
    reads, clock = gate()
    clock.now += 20
    reads.on_changes(None)
    assert reads.floor("anyone") is None
    clock.now += 16
    assert reads.floor("anyone") == 0


def test_a_follower_behind_or_lost_vouches_for_nobody() -> None:
    following = [True]
    reads, clock = gate(following)
    clock.now += 20
    assert reads.floor("anyone") == 0
    following[0] = False
    assert reads.floor("anyone") is None
