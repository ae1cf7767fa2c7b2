"""One reader of the change feed per pod, on the Cloud Spanner emulator: `serve
--workers 2` reads the store's feed through one process (entitlements_feed_reads_total
grows like one reader's, not two), and a write made by another server is seen by it
without a token."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from storage.spanner import DatabasePath
from tests.spanner_emulator import SpannerEmulator
from tests.support.clients import grant_request, granted, writer
from tests.support.harness import write_test_credentials
from tests.support.metrics import free_port, scrape, value
from tests.support.polling import seconds_until
from tests.support.processes import ENTITLEMENTS, await_serving, feed_reader_pid

pytestmark = [pytest.mark.subprocess, pytest.mark.timeout(240)]


@contextmanager
def serving(
    emulator: SpannerEmulator, path: DatabasePath, credentials: Path, workers: int, metrics: int
) -> Iterator[tuple[str, list[str]]]:
    env = {
        **emulator.child_env(),
        "ENTITLEMENTS_CREDENTIALS_FILE": str(credentials),
        "ENTITLEMENTS_METRICS_PORT": str(metrics),
        # A busy machine: the emulator may take longer than the default budget.
        "ENTITLEMENTS_STORE_TIMEOUT_SECONDS": "2",
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [ENTITLEMENTS, "serve", "--port", "0", "--workers", str(workers), "--storage", path.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    )
    try:
        target, output, drain = await_serving(process)
        yield target, output
    finally:
        process.terminate()
        process.wait(timeout=60)
    drain.join(timeout=5)


def test_two_workers_on_spanner_read_the_feed_through_one_reader(
    spanner_emulator: SpannerEmulator, tmp_path: Path
) -> None:
    path = spanner_emulator.create_database("relay")
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    rates = {}
    for workers in (1, 2):
        metrics = free_port()
        with serving(spanner_emulator, path, credentials, workers, metrics) as (target, output):
            if workers == 2:
                banner = next(line for line in output if "entitlements: serving on" in line)
                workers_pids = banner.split("pids ")[1].split(";")[0].split(", ")
                assert str(feed_reader_pid(output)) not in workers_pids
                assert "2 workers" in banner
                on_server = granted(target, "spanner-roamer")
                assert not on_server()
                other = free_port()
                with serving(spanner_emulator, path, credentials, 1, other) as (writer_target, _):
                    writer(writer_target).GrantEntitlement(
                        grant_request("spanner-roamer", "s-1"), timeout=30
                    )
                for _ in range(6):  # whichever worker answers
                    seconds_until(on_server, 15)
            time.sleep(1.5)
            before = value(scrape(metrics), "entitlements_feed_reads_total")
            time.sleep(3)
            rates[workers] = (value(scrape(metrics), "entitlements_feed_reads_total") - before) / 3
    assert rates[1] > 1, rates
    assert rates[2] > 1, rates
    assert rates[2] < 1.5 * rates[1], rates
