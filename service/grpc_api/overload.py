"""How late a worker is, and whether it should refuse work: admission by queueing delay.

A cache hit never awaits, so a count of calls in flight in the handler sees about one call
even when hundreds wait: the queue sits before our code, in grpc-core's HTTP/2 layer, its
completion queue and the event loop's ready callbacks (NOTES.md, "Measured from outside").
What every call in that queue does share is the event loop: a call's handler starts only
when the loop reaches it. So the worker measures the loop's lag: a probe task asks to wake
every `probe_seconds` and records how late it woke. That lag is the time a call waiting on
the loop waits, the queueing delay of CoDel; it is an estimate of a call's own wait (grpc.aio
does not expose when a call arrived: the time spent in grpc-core before the loop saw it is
not in it), and a lower bound.

The decision follows CoDel (Nichols and Jacobson): a worker is overloaded once the lag has
stayed above `target_seconds` (25 ms) for a whole `interval_seconds` (100 ms), seen by samples
at least an interval apart, not on one late wake-up (a garbage collection, a burst, the
process descheduled for a moment); it stops being overloaded at the first probe back under
the target. The target is CoDel's 5 ms times five: Python hands the GIL between threads every
5 ms (`sys.getswitchinterval()`), so a store client's thread busy in Python (Spanner's is)
delays the loop by that much at any load; measured in CI, a 5 ms target shed a lone write on
the Spanner emulator. While overloaded the RPC guard refuses calls RESOURCE_EXHAUSTED before any
other work (reason "queue_delay"). The guard reads one attribute per call: no await and no
allocation on the hot path.

Per call, the one thing grpc lets us see of its wait is its deadline: a call whose deadline
passed before its handler started is dropped at once with DEADLINE_EXCEEDED and counted
("expired"): it waited its whole budget in the queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# CoDel's interval, and its 5 ms target times five (the GIL's switch interval is 5 ms: see
# the module docstring): a delay above 25 ms for 100 ms means a standing queue.
DEFAULT_TARGET_SECONDS = 0.025
DEFAULT_INTERVAL_SECONDS = 0.1
# How often the probe asks to wake (a sample of the lag each time, when the loop is idle).
DEFAULT_PROBE_SECONDS = 0.01


class QueueDelayMonitor:
    """CoDel's state for one worker: fed samples of the queueing delay (`observe`), it
    says whether the worker is overloaded (`overloaded`, a plain attribute the guard
    reads on every call). Runs on the worker's event loop (no lock)."""

    def __init__(
        self,
        target_seconds: float = DEFAULT_TARGET_SECONDS,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        *,
        probe_seconds: float = DEFAULT_PROBE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        on_lag: Callable[[float], None] | None = None,
    ) -> None:
        """`target_seconds` 0 turns shedding on delay off (the lag is still measured).
        `on_lag` is told every sample (the metrics' histogram)."""
        self.target_seconds = target_seconds
        self.interval_seconds = interval_seconds
        self.probe_seconds = probe_seconds
        self._clock = clock
        self._on_lag = on_lag
        self.overloaded = False
        # When the lag first went above the target without coming back under it since.
        self._above_since: float | None = None
        # The last sample, the largest seen, and how many times the worker became
        # overloaded (for tests, benchmarks and logs).
        self.last_lag = 0.0
        self.max_lag = 0.0
        self.episodes = 0
        self._task: asyncio.Task[None] | None = None

    def observe(self, lag: float, now: float) -> None:
        """One sample of the queueing delay, taken at `now` (the clock's time)."""
        self.last_lag = lag
        if lag > self.max_lag:
            self.max_lag = lag
        if self._on_lag is not None:
            self._on_lag(lag)
        if self.target_seconds <= 0 or lag <= self.target_seconds:
            self._above_since = None
            if self.overloaded:
                self.overloaded = False
                log.info("queueing delay back under %g ms: admitting", self.target_seconds * 1e3)
            return
        if self._above_since is None:
            # CoDel's clock starts at this late sample: one late wake-up, however late,
            # is not a standing queue until a sample an interval later is late too.
            self._above_since = now
        if not self.overloaded and now - self._above_since >= self.interval_seconds:
            self.overloaded = True
            self.episodes += 1
            log.warning(
                "queueing delay %.1f ms above %g ms for %g ms: shedding",
                lag * 1e3,
                self.target_seconds * 1e3,
                self.interval_seconds * 1e3,
            )

    def start(self) -> None:
        """Starts the probe on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._probe(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.overloaded = False

    async def _probe(self) -> None:
        clock, period = self._clock, self.probe_seconds
        while True:
            due = clock() + period
            await asyncio.sleep(period)
            now = clock()
            try:
                self.observe(max(0.0, now - due), now)
            except Exception:  # never let a metrics callback end the probe
                log.exception("cannot record the event loop's lag")
