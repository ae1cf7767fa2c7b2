"""Client-side adaptive throttling (Google SRE book, "Handling Overload"): while the
server accepts fewer calls than it is sent, refuse some locally, with probability

    max(0, (requests - K * accepts) / (requests + 1))

over the last `window_seconds`. `requests` counts every call attempted, refused locally or
not; `accepts` those the server answered other than by shedding or being unreachable
(RESOURCE_EXHAUSTED, UNAVAILABLE). With K = 2 a healthy server is never throttled (nothing
is refused until it rejects half the calls); a server that refuses everything is sent only
a trickle (p approaches 1 as requests grow), enough to see it recover.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable

# Counts are kept per bucket of this many seconds, over the window.
BUCKET_SECONDS = 1.0


class AdaptiveThrottle:
    def __init__(
        self,
        k: float = 2.0,
        window_seconds: float = 120.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.k = k
        self._window = window_seconds
        self._clock = clock
        self._random = rng
        # (bucket start, requests, accepts), oldest first.
        self._buckets: deque[list[float]] = deque()
        self._requests = 0.0
        self._accepts = 0.0
        self._lock = threading.Lock()
        self.refused = 0

    def _roll(self, now: float) -> list[float]:
        start = now - now % BUCKET_SECONDS
        buckets = self._buckets
        while buckets and buckets[0][0] <= now - self._window:
            _, requests, accepts = buckets.popleft()
            self._requests -= requests
            self._accepts -= accepts
        if not buckets or buckets[-1][0] != start:
            buckets.append([start, 0.0, 0.0])
        return buckets[-1]

    def probability(self) -> float:
        """The probability that the next call is refused locally."""
        with self._lock:
            self._roll(self._clock())
            return max(0.0, (self._requests - self.k * self._accepts) / (self._requests + 1))

    def admit(self) -> bool:
        """Counts a request; False when it must be refused locally."""
        with self._lock:
            bucket = self._roll(self._clock())
            p = max(0.0, (self._requests - self.k * self._accepts) / (self._requests + 1))
            bucket[1] += 1
            self._requests += 1
            if p > 0 and self._random() < p:
                self.refused += 1
                return False
            return True

    def accepted(self) -> None:
        """The server accepted a call that admit() let through."""
        with self._lock:
            bucket = self._roll(self._clock())
            bucket[2] += 1
            self._accepts += 1
