"""The README's flow through the real console script: seed the demo users into SQLite,
serve on a free port, ask with the client subcommands, stop with SIGTERM."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ENTITLEMENTS = shutil.which("entitlements") or str(Path(sys.executable).parent / "entitlements")


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ENTITLEMENTS, *args], capture_output=True, text=True, timeout=60, check=check
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("cli") / "demo.db"
    storage = f"sqlite:///{db}"
    seeded = run_cli("seed-demo", "--storage", storage)
    assert "demo-family-member" in seeded.stdout
    server = subprocess.Popen(
        [ENTITLEMENTS, "serve", "--port", "0", "--storage", storage],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert server.stdout is not None
        target = None
        for line in server.stdout:
            match = re.search(r"serving on (\S+:\d+)", line)
            if match:
                target = match.group(1)
                break
        assert target, "server did not report its port"
        yield target
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0


def test_get_entitlement_prints_the_decision(served: str) -> None:
    granted = run_cli("get-entitlement", "--target", served, "demo-active", "offline_downloads")
    assert "GRANTED" in granted.stdout and "sub-active" in granted.stdout
    denied = run_cli("get-entitlement", "--target", served, "demo-free", "offline_downloads")
    assert "DENIED (no_entitling_source)" in denied.stdout


def test_list_entitlements(served: str) -> None:
    out = run_cli("list-entitlements", "--target", served, "demo-family-member").stdout
    assert "audiobook_hours: DENIED (household_role)" in out
    assert re.search(r"offline_downloads: GRANTED .*household household-1", out)


def test_get_offers(served: str) -> None:
    out = run_cli(
        "get-offers", "--target", served, "demo-lapsed", "--market", "US", "--platform", "web",
        "--include-ineligible",
    ).stdout  # fmt: skip
    assert "premium-individual-winback-3m: winback" in out
    assert "premium-individual-trial-1m: had_premium_before" in out


def test_bad_input_prints_field_violations(served: str) -> None:
    result = run_cli(
        "get-entitlement", "--target", served, "demo-free", "teleportation", check=False
    )
    assert result.returncode == 1
    assert "INVALID_ARGUMENT" in result.stderr
    assert "feature_id: unknown feature 'teleportation'" in result.stderr
