"""One reader of the store's change feed per pod (service.grpc_api.feed_reader): with
several workers the store's feed is read by one process, whatever the worker count, and
every worker still sees every write; when that reader dies, no worker serves stale state
silently, and the supervisor replaces it."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.support.clients import channels_to_each_worker, grant_request, granted, writer
from tests.support.harness import write_test_credentials
from tests.support.metrics import free_port, scrape, value
from tests.support.polling import seconds_until
from tests.support.processes import feed_reader_pid, server_process, worker_pids

pytestmark = pytest.mark.subprocess

# Long enough for a few hundred polls at 0.05 s, short enough for the default suite.
WINDOW_SECONDS = 3.0


def feed_reads_per_second(tmp_path: Path, workers: int) -> float:
    db = tmp_path / f"feed-{workers}.db"
    credentials = write_test_credentials(tmp_path / f"credentials-{workers}.yaml")
    metrics_port = free_port()
    env = {"ENTITLEMENTS_METRICS_PORT": str(metrics_port), "ENTITLEMENTS_FEED_POLL_SECONDS": "0.05"}
    with server_process(db, credentials, workers=workers, env=env):
        time.sleep(1.5)  # past start-up, and a metrics copy (every second)
        before = value(scrape(metrics_port), "entitlements_feed_reads_total")
        time.sleep(WINDOW_SECONDS)
        after = value(scrape(metrics_port), "entitlements_feed_reads_total")
    return (after - before) / WINDOW_SECONDS


def test_feed_reads_grow_with_pods_not_with_workers(tmp_path: Path) -> None:
    one = feed_reads_per_second(tmp_path, workers=1)
    two = feed_reads_per_second(tmp_path, workers=2)
    assert one > 5, one  # the feed is read (every 0.05 s, less on a busy machine)
    assert two > 5, two
    # Two workers read the store's feed through one reader: not twice as often.
    assert two < 1.5 * one, (one, two)


def test_every_worker_sees_a_write_through_the_one_reader(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    with server_process(db, credentials, workers=2) as server:
        assert feed_reader_pid(server.output) not in worker_pids(server)
        on_server = granted(server.target, "roamer")
        assert not on_server()
        with server_process(db, credentials) as other:  # another pod's write
            writer(other.target).GrantEntitlement(grant_request("roamer", "w-1"), timeout=10)
        channels = channels_to_each_worker(server.target, worker_pids(server))
        for channel in channels.values():
            channel.close()
        # Both workers: the kernel places this test's calls on either.
        for _ in range(8):
            seconds_until(on_server)


def test_a_lost_feed_reader_never_leaves_a_worker_serving_stale_state(tmp_path: Path) -> None:
    """Hang the reader (SIGSTOP): the workers cannot read the feed, say so, and expire
    their caches at every poll (a change made meanwhile, behind the feed's back, is
    seen). Then kill it: the supervisor starts a new reader (a new epoch: every worker
    drops its cache once) and the workers follow it again (a later write is seen)."""
    db = tmp_path / "shared.db"
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    with server_process(db, credentials, workers=2) as server:
        writer(server.target).GrantEntitlement(grant_request("roamer", "w-1"), timeout=10)
        on_server = granted(server.target, "roamer")
        seconds_until(on_server)
        first = feed_reader_pid(server.output)
        os.kill(first, signal.SIGSTOP)
        try:
            seconds_until(lambda: any("change feed lost" in line for line in server.output))
            with sqlite3.connect(db) as connection:
                connection.execute("DELETE FROM grants WHERE user_id = 'roamer'")
            for _ in range(8):  # on both workers
                seconds_until(lambda: not on_server())
        finally:
            os.kill(first, signal.SIGKILL)
        seconds_until(lambda: any("change feed back" in line for line in server.output), 15)
        assert any("feed reader (pid" in line and "replacing it" in line for line in server.output)
        writer(server.target).GrantEntitlement(grant_request("roamer", "w-2"), timeout=10)
        for _ in range(8):
            seconds_until(on_server)
