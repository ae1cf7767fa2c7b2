"""The Spanner-backed test servers (the integration harness on the emulator) on a busy
machine: when the emulator answers late (CI at load average ~5 took longer than the
default 0.5 s store budget), the read tests still get their answers, with nothing they
assert weakened. The emulator is paused (SIGSTOP by its PID) to make it late here."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from entitlements.v1 import entitlement_service_pb2 as es
from tests.spanner_emulator import SpannerEmulator
from tests.support.harness import NOW, Harness

pytestmark = pytest.mark.parametrize("harness", ["spanner"], indirect=True)

LATE = 1.5  # seconds the emulator does not answer: three default store budgets


def test_grace_period_read_waits_for_a_late_emulator(
    harness: Harness,
    spanner_emulator: SpannerEmulator,
) -> None:
    """test_grace_period_keeps_access_until_grace_end[spanner], with the emulator late."""
    with ThreadPoolExecutor(1) as pool:
        with spanner_emulator.paused():
            started = time.monotonic()
            answer = pool.submit(
                harness.entitlements.GetEntitlement,
                es.GetEntitlementRequest(user_id="demo-grace", feature_id="ad_free_playback"),
                timeout=5,  # as the read tests ask
            )
            time.sleep(LATE)
            assert not answer.done()  # the store call is waiting for the emulator
        entitlement = answer.result().entitlement
    assert time.monotonic() - started >= LATE
    assert entitlement.granted
    assert entitlement.state == es.ENTITLEMENT_STATE_GRACE_PERIOD
    grace_end = NOW + timedelta(days=5)
    assert entitlement.valid_until.ToDatetime().replace(tzinfo=NOW.tzinfo) == grace_end
