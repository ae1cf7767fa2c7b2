"""The client library's NearCache and AdaptiveThrottle on their own, on fake clocks (the
paths through real servers are tests/integration/test_client_near_cache.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from entitlements_client import AdaptiveThrottle, NearCache


@dataclass(frozen=True)
class Value:
    name: str
    stale: bool = False

    def as_stale(self) -> Value:
        return Value(self.name, True)


class Clocks:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = 1_000_000.0

    def cache(self, **kwargs: float) -> NearCache:
        return NearCache(
            3,
            staleness_bound=kwargs.pop("staleness_bound", 5.0),
            heartbeat_timeout=kwargs.pop("heartbeat_timeout", 3.0),
            clock=lambda: self.mono,
            wall_clock=lambda: self.wall,
        )

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


INF = float("inf")


def test_nothing_is_stored_or_served_before_the_stream_is_heard() -> None:
    clocks = Clocks()
    cache = clocks.cache()
    assert not cache.store("k", "u", Value("a"), INF, "", cache.ticket())
    assert cache.lookup("k") is None
    cache.heard()
    assert cache.store("k", "u", Value("a"), INF, "", cache.ticket())
    assert cache.lookup("k") == Value("a")


def test_an_entry_expires_at_its_valid_until() -> None:
    clocks = Clocks()
    cache = clocks.cache(heartbeat_timeout=100)
    cache.heard()
    cache.store("k", "u", Value("a"), clocks.wall + 2, "", cache.ticket())
    clocks.advance(1.9)
    assert cache.lookup("k") == Value("a")
    clocks.advance(0.1)
    assert cache.lookup("k") is None
    assert len(cache) == 0


def test_stale_within_the_bound_then_nothing() -> None:
    clocks = Clocks()
    cache = clocks.cache(staleness_bound=5, heartbeat_timeout=3)
    cache.heard()
    cache.store("k", "u", Value("a"), INF, "", cache.ticket())
    clocks.advance(3.5)
    assert cache.lookup("k") == Value("a", stale=True)
    assert not cache.store("k2", "u", Value("b"), INF, "", cache.ticket())  # stream down
    clocks.advance(1.6)
    assert cache.lookup("k") is None
    cache.heard()  # the stream resumed without reset: the entry is exact again
    assert cache.lookup("k") == Value("a")


def test_an_invalidation_drops_the_users_entries_and_requires_its_token() -> None:
    clocks = Clocks()
    cache = clocks.cache(heartbeat_timeout=100)
    cache.heard()
    cache.store(("e", "u", "f1"), "u", Value("a"), INF, "", cache.ticket())
    cache.store(("e", "u", "f2"), "u", Value("b"), INF, "", cache.ticket())
    cache.store(("e", "v", "f1"), "v", Value("c"), INF, "", cache.ticket())
    in_flight = cache.ticket()
    cache.invalidate("u", "token-7")
    assert cache.lookup(("e", "u", "f1")) is None
    assert cache.lookup(("e", "u", "f2")) is None
    assert cache.lookup(("e", "v", "f1")) == Value("c")
    required = cache.requirement("u")
    assert required is not None
    assert required.token == "token-7"
    # An answer whose read started before the change may predate it: not stored.
    assert not cache.store(("e", "u", "f1"), "u", Value("old"), INF, "", in_flight)
    assert cache.store(("e", "u", "f1"), "u", Value("new"), INF, "token-7", cache.ticket())
    assert cache.lookup(("e", "u", "f1"), "token-7") == Value("new")
    assert cache.lookup(("e", "u", "f1"), "another-token") is None
    clocks.advance(11)
    assert cache.requirement("u") is None
    cache.invalidate("w", "")
    derived = cache.requirement("w")
    assert derived is not None
    assert derived.full_consistency


def test_a_reset_drops_everything_and_answers_in_flight() -> None:
    clocks = Clocks()
    cache = clocks.cache(heartbeat_timeout=100)
    cache.heard()
    cache.store("k", "u", Value("a"), INF, "", cache.ticket())
    in_flight = cache.ticket()
    cache.reset()
    assert len(cache) == 0
    assert cache.lookup("k") is None
    assert not cache.store("k", "u", Value("a"), INF, "", in_flight)


def test_the_lru_is_bounded_by_entries() -> None:
    clocks = Clocks()
    cache = clocks.cache(heartbeat_timeout=100)
    cache.heard()
    for key in ("a", "b", "c"):
        cache.store(key, key, Value(key), INF, "", cache.ticket())
    assert cache.lookup("a") == Value("a")  # a is now the most recent
    cache.store("d", "d", Value("d"), INF, "", cache.ticket())
    assert cache.lookup("b") is None
    assert [cache.lookup(k) for k in ("a", "c", "d")] == [Value("a"), Value("c"), Value("d")]
    assert cache.stats.evictions == 1


def test_the_throttle_follows_the_sre_formula() -> None:
    now = [0.0]
    draws = iter([0.99] * 1000)
    throttle = AdaptiveThrottle(2.0, clock=lambda: now[0], rng=lambda: next(draws))
    for _ in range(10):  # a healthy server: everything accepted, nothing refused
        assert throttle.admit()
        throttle.accepted()
    assert throttle.probability() == 0.0
    for _ in range(30):  # the server now rejects everything
        throttle.admit()
    # requests 40, accepts 10: (40 - 2 * 10) / 41
    assert throttle.probability() == pytest.approx(20 / 41)
    now[0] += 121  # the window forgets
    assert throttle.probability() == 0.0
