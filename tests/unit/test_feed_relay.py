"""The relay's ring of changes (storage.feed_relay.ChangeRing): positions of its own,
gaps on another epoch or a position it no longer holds, long polls that wake on a
change, and no answer while it cannot vouch for the feed."""

from __future__ import annotations

import threading
import time

import pytest

from storage.feed import Change
from storage.feed_relay import ChangeRing, RelayUnavailable


def ready_ring(capacity: int = 100) -> ChangeRing:
    ring = ChangeRing(capacity)
    ring.set_failure(None)
    return ring


def test_reads_the_changes_after_a_position_in_order() -> None:
    ring = ready_ring()
    start = ring.position()
    ring.append((Change("a", 1), Change("b", 3)))
    batch = ring.read(start, limit=10, wait_seconds=0)
    assert batch.changes == (Change("a", 1), Change("b", 3))
    assert not batch.gap
    ring.append((Change("a", 2),))
    assert ring.read(batch.position, 10, 0).changes == (Change("a", 2),)
    assert ring.read(start, limit=1, wait_seconds=0).changes == (Change("a", 1),)


def test_nothing_new_is_an_empty_batch_at_the_same_position() -> None:
    ring = ready_ring()
    ring.append((Change("a", 1),))
    position = ring.position()
    batch = ring.read(position, 10, 0)
    assert batch.changes == ()
    assert batch.position == position
    assert not batch.gap


def test_another_epoch_or_a_trimmed_position_is_a_gap() -> None:
    ring = ready_ring(capacity=4)
    old = ring.position()
    ring.append(tuple(Change(f"u{i}", i) for i in range(10)))  # trims the oldest
    assert ring.read(old, 10, 0).gap
    recent = ring.position()
    ring.restart()  # the store's feed had a gap
    batch = ring.read(recent, 10, 0)
    assert batch.gap
    assert batch.position == ring.position()
    assert ring.read("not-a-position", 10, 0).gap


def test_a_long_poll_returns_as_soon_as_a_change_arrives() -> None:
    ring = ready_ring()
    position = ring.position()
    threading.Timer(0.2, ring.append, [(Change("late", 1),)]).start()
    began = time.monotonic()
    batch = ring.read(position, 10, wait_seconds=30)
    assert batch.changes == (Change("late", 1),)
    assert time.monotonic() - began < 20  # woken by the change, not by the wait's end


def test_a_ring_that_cannot_vouch_for_the_feed_refuses_to_answer() -> None:
    ring = ChangeRing()
    with pytest.raises(RelayUnavailable):
        ring.position()  # nothing read yet
    ring.set_failure(None)
    position = ring.position()
    ring.set_failure("the store's change feed cannot be read")
    with pytest.raises(RelayUnavailable):
        ring.read(position, 10, 0)
