"""Which token-less cache misses may read the store at bounded staleness.

A read at a timestamp `bound` in the past is cheaper on Spanner (any replica serves it
at once, the nearest one in a multi-region instance, without asking the leader) but may
miss recent writes. It is as good as a strong read for a token-less read exactly when no
write of the user committed after that timestamp is known: the change feed tells every
write of every replica, so a worker that follows it (and is not behind) can vouch for a
user it has seen no change of for `window` seconds (the bound, plus a margin for the
feed's own lag and clock skew). A write it has not seen yet is one a cached entry would
miss too: the freshness guarantee is the same.

`StaleReadGate` listens to the follower: each change marks its user for `window`
seconds (with the version it reached); a gap or a lost feed makes it vouch for nobody
for `window` seconds. `floor(user)` is None when the read must be strong, else the
version the stale state must reach (the newest the feed told of, 0 if none): the store
falls back to a strong read when its stale state is older. Reads with a consistency
token, full-consistency reads and household reads with a manager's token never use it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from storage.feed import Change


class StaleReadGate:
    def __init__(
        self,
        following: Callable[[], bool],
        window_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        # True while the follower reads the feed and is not behind (else: vouch for none).
        self._following = following
        self._window = window_seconds
        self._monotonic = monotonic
        # Users changed in the last `window` seconds: their newest version (None: a
        # household member, whose version the change does not tell), oldest first.
        self._recent: OrderedDict[str, tuple[int | None, float]] = OrderedDict()
        # Changes before the follower started (or before a gap) are unknown.
        self._unsure_until = monotonic() + window_seconds

    def on_changes(self, changes: Iterable[Change] | None) -> None:
        """A FeedFollower listener: a batch of changes, or None when the whole cache was
        expired (a gap, a lost feed): every user may have changed."""
        now = self._monotonic()
        if changes is None:
            self._recent.clear()
            self._unsure_until = now + self._window
            return
        for change in changes:
            known = self._recent.pop(change.user_id, None)
            version = change.version
            if known is not None and (known[0] is None or version is None):
                version = None
            elif known is not None and version is not None and known[0] is not None:
                version = max(version, known[0])
            self._recent[change.user_id] = (version, now)
        self._forget_before(now - self._window)

    def floor(self, user_id: str) -> int | None:
        """None: read strongly. Else the version a stale read must reach."""
        now = self._monotonic()
        if now < self._unsure_until or not self._following():
            return None
        self._forget_before(now - self._window)
        known = self._recent.get(user_id)
        if known is None:
            return 0
        return known[0]

    def _forget_before(self, oldest: float) -> None:
        while self._recent:
            user_id, (_, seen) = next(iter(self._recent.items()))
            if seen >= oldest:
                return
            del self._recent[user_id]
