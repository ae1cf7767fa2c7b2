"""The CoDel decision of service.grpc_api.overload, with samples and times given by the test,
and its probe on a real event loop made late by blocking it."""

from __future__ import annotations

import asyncio
import time

from service.grpc_api.overload import QueueDelayMonitor

TARGET = 0.005
INTERVAL = 0.1


def monitor() -> QueueDelayMonitor:
    return QueueDelayMonitor(TARGET, INTERVAL)


def test_one_late_wake_up_however_late_is_not_overload() -> None:
    m = monitor()
    m.observe(0.02, now=10.0)  # 20 ms late: above target, but one sample
    assert not m.overloaded
    m.observe(0.001, now=10.01)
    assert not m.overloaded
    assert m.episodes == 0
    late = monitor()
    late.observe(0.2, now=10.0)  # woken 200 ms late once (a pause, the process descheduled)
    assert not late.overloaded
    late.observe(0.001, now=10.01)
    assert not late.overloaded
    # Late again an interval later: a standing queue.
    late.observe(0.2, now=10.02)
    late.observe(0.2, now=10.2)
    assert late.overloaded
    assert late.episodes == 1


def test_above_target_for_an_interval_sheds_until_a_sample_under_it() -> None:
    m = monitor()
    now = 100.0
    for _ in range(9):  # 10 ms samples, each 8 ms late: 90 ms above target
        now += 0.01
        m.observe(0.008, now)
    assert not m.overloaded
    now += 0.02
    m.observe(0.008, now)  # now above target for over 100 ms
    assert m.overloaded
    assert m.episodes == 1
    now += 0.01
    m.observe(0.03, now)
    assert m.overloaded
    assert m.episodes == 1
    m.observe(0.004, now + 0.01)
    assert not m.overloaded
    # The next episode needs a whole interval above target again.
    m.observe(0.006, now + 0.02)
    assert not m.overloaded
    m.observe(0.006, now + 0.2)
    assert m.overloaded
    assert m.episodes == 2
    assert m.max_lag == 0.03


def test_target_zero_measures_but_never_sheds() -> None:
    seen: list[float] = []
    m = QueueDelayMonitor(0, INTERVAL, on_lag=seen.append)
    for i in range(50):
        m.observe(1.0, now=float(i))
    assert not m.overloaded
    assert seen == [1.0] * 50
    assert m.max_lag == 1.0


def test_the_probe_sees_a_blocked_loop_and_recovers() -> None:
    async def run() -> tuple[bool, float, bool]:
        m = QueueDelayMonitor(TARGET, 0.05, probe_seconds=0.005)
        m.start()
        await asyncio.sleep(0.02)
        # The loop busy for 300 ms in 30 ms slices, as if calls kept it full.
        for _ in range(10):
            time.sleep(0.03)  # noqa: ASYNC251 (blocking the loop is the point)
            await asyncio.sleep(0)
        busy_overloaded, lag = m.overloaded, m.max_lag
        # Idle again: the first sample under target ends the episode (a busy machine
        # may take a while to give one).
        deadline = time.monotonic() + 5
        # The monitor's state has no event to wait on: polled.
        while m.overloaded and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        recovered = not m.overloaded
        await m.stop()
        return busy_overloaded, lag, recovered

    busy_overloaded, lag, recovered = asyncio.run(run())
    assert busy_overloaded
    assert lag >= 0.025
    assert recovered
