"""The household, student verification, refund and watch commands through the real
console script against a real server: a household on the family plan shares its
features with a member until removed; a verified student sees the student offer; a refund
names the period it refunds exactly as record-event printed it; `watch` prints the first
message and the one a grant made by another command causes, as text or JSON lines, resumes
by itself when the server rotates the connection, ends cleanly on Ctrl-C, and prints the
resume command when the server shuts down."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cli.remembered import TOKENS_FILE
from tests.support.cli import CLEAN_ENV, Served, run_cli, serve
from tests.support.processes import ENTITLEMENTS

pytestmark = pytest.mark.subprocess


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("cli-household")
    # A short connection age: watch must resume by itself when the server rotates it.
    server = serve(
        folder, "--workers", "1", "--storage", "memory://", "--max-connection-age-seconds",
        "3", "--max-connection-age-grace-seconds", "1",
    )  # fmt: skip
    try:
        yield server
    finally:
        server.stop()


def cli(served: Served, *args: str, check: bool = True) -> str:
    result = run_cli(*args, "--target", served.target, cwd=served.folder, check=check)
    return result.stdout + result.stderr


# A shell without job control starts a background job (`make test &`) with SIGINT ignored,
# and children inherit that: Python then installs no KeyboardInterrupt handler, and the
# Ctrl-C test's SIGINT did nothing (issue 25). The child restores SIGINT's default (not
# inherited from here: the test process may ignore it) before it becomes the CLI.
WITH_DEFAULT_SIGINT = (
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])",
)


def start_watch(served: Served, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*WITH_DEFAULT_SIGINT, ENTITLEMENTS, "watch", "--target", served.target, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=served.folder,
        env=CLEAN_ENV,
    )


def test_household_shares_the_family_plan_until_the_member_is_removed(served: Served) -> None:
    cli(served, "record-event", "mom", "--type", "purchased", "--subscription", "sub-mom",
        "--store", "web", "--plan", "premium_family", "--period-days", "30")  # fmt: skip
    created = cli(served, "create-household", "mom", "--request-id", "hh-mom")
    household = re.search(r"created household (\S+) \(premium_family, up to 6", created)
    assert household, created
    household_id = household.group(1)
    assert f"add-household-member --target {served.target} mom {household_id} MEMBER" in created
    # The same request id answers the same household.
    replay = json.loads(cli(served, "create-household", "mom", "--request-id", "hh-mom", "--json"))
    assert replay["household_id"] == household_id
    assert replay["consistency_token"]

    added = cli(served, "add-household-member", "mom", household_id, "kid")
    assert f"kid is in household {household_id}; consistency token: " in added
    assert f"read it back: entitlements list-entitlements --target {served.target} kid" in added
    assert "the manager's consistency token: " in added
    # Both tokens are remembered: reads of either user see the write.
    remembered = json.loads((served.folder / "data" / TOKENS_FILE).read_text())[served.target]
    assert {"mom", "kid"} <= set(remembered)
    shared = cli(served, "get-entitlement", "kid", "family_content_filter")
    assert f"GRANTED (active, plan premium_family, from household {household_id}" in shared

    removed = cli(served, "remove-household-member", "mom", household_id, "kid", "--json")
    assert json.loads(removed)["household_id"] == household_id
    denied = cli(served, "get-entitlement", "kid", "family_content_filter")
    assert "DENIED" in denied

    # The friendly errors: no such household; a manager without a household plan.
    missing = cli(served, "add-household-member", "mom", "household-nope", "kid", check=False)
    assert "error: NOT_FOUND" in missing
    solo = cli(served, "create-household", "solo-user", check=False)
    assert "error: FAILED_PRECONDITION" in solo
    assert "NOT_A_HOUSEHOLD_PLAN" in solo


def test_a_verified_student_sees_the_student_offer_until_revoked(served: Served) -> None:
    def offers() -> str:
        return cli(served, "get-offers", "stu", "--market", "US", "--platform", "web")

    cli(served, "grant", "stu", "--feature", "shuffle_play")  # the user exists
    assert "premium-student-12m" not in offers()
    verified = cli(served, "verify-student", "stu", "--days", "30",
                   "--provider-reference", "sheerid-1")  # fmt: skip
    assert "verified student until " in verified
    assert "consistency token: " in verified
    assert "premium-student-12m: student of premium_student" in offers()

    # --until DATE means through that day, UTC.
    answer = json.loads(cli(served, "verify-student", "stu", "--until", "2099-06-30",
                            "--provider-reference", "sheerid-2", "--json"))  # fmt: skip
    assert answer["verified_until"] == "2099-07-01T00:00:00Z"

    assert "student verification revoked" in cli(served, "revoke-student", "stu")
    assert "premium-student-12m" not in offers()


def test_a_refund_names_the_period_record_event_printed(served: Served) -> None:
    bought = cli(served, "record-event", "payer", "--type", "purchased", "--subscription",
                 "sub-pay", "--store", "web", "--plan", "premium_individual", "--period-days",
                 "30")  # fmt: skip
    period_end = re.search(r"period ends (\S+)", bought)
    assert period_end, bought
    refunded = cli(served, "record-event", "payer", "--type", "refunded", "--subscription",
                   "sub-pay", "--store", "web", "--refunded-period-end",
                   period_end.group(1))  # fmt: skip
    assert ": applied;" in refunded
    assert "subscription sub-pay: refunded" in refunded
    assert "DENIED" in cli(served, "get-entitlement", "payer", "offline_downloads")
    # Without the period: the server's field violation.
    missing = cli(served, "record-event", "payer", "--type", "refund_reversed",
                  "--subscription", "sub-pay", "--store", "web", check=False)  # fmt: skip
    assert "refunded_period_end: required" in missing


def test_watch_prints_the_first_message_and_the_one_a_grant_causes(served: Served) -> None:
    watching = start_watch(served, "watcher", "offline_downloads", "--max-messages", "2")
    try:
        assert watching.stdout is not None
        assert watching.stdout.readline().startswith("initial; consistency token: ")
        cli(served, "grant", "watcher", "--feature", "offline_downloads", "--days", "1")
        out, err = watching.communicate(timeout=30)
    finally:
        watching.kill()
    assert watching.returncode == 0, err
    assert re.search(r"^write; consistency token: \S+\n  watcher offline_downloads: GRANTED",
                     out, re.MULTILINE), out  # fmt: skip


def test_watch_json_lines_and_resuming_when_the_connection_is_rotated(served: Served) -> None:
    # Longer than the server's connection age (3 s + 1 s grace): the stream is ended
    # UNAVAILABLE and resumed from the last message's token.
    result = run_cli("watch", "--target", served.target, "watcher-json", "--json",
                     "--seconds", "7", cwd=served.folder)  # fmt: skip
    messages = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(messages) >= 2, result.stderr
    assert {m["reason"] for m in messages} == {"WATCH_REASON_INITIAL"}
    assert len(messages[0]["entitlements"]) > 3  # every feature of the catalog
    assert "max connection age; resuming" in result.stderr


def test_watch_of_an_unknown_feature_lists_the_catalog(served: Served) -> None:
    out = cli(served, "watch", "watcher", "offline_download", "--max-messages", "1", check=False)
    assert "feature_ids[0]: unknown feature 'offline_download'" in out
    assert "'offline_download': did you mean offline_downloads" in out
    assert "the server's catalog has: " in out


def test_watch_ends_cleanly_on_ctrl_c(served: Served) -> None:
    # Started as from a background job of a shell (SIGINT ignored), whatever ran pytest.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        watching = start_watch(served, "watcher-int", "offline_downloads")
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert watching.stdout is not None
        token = watching.stdout.readline().split("consistency token: ")[1].strip()
        watching.send_signal(signal.SIGINT)
        _, err = watching.communicate(timeout=30)
    finally:
        watching.kill()
    assert watching.returncode == 0
    assert f"offline_downloads --resume-token {token}" in err


def test_watch_prints_how_to_resume_when_the_server_shuts_down(tmp_path: Path) -> None:
    server = serve(tmp_path, "--workers", "1", "--storage", "memory://")
    watching = start_watch(server, "leaving", "shuffle_play")
    try:
        assert watching.stdout is not None
        token = watching.stdout.readline().split("consistency token: ")[1].strip()
    finally:
        server.stop()
    try:
        _, err = watching.communicate(timeout=30)
    finally:
        watching.kill()
    assert watching.returncode == 1
    assert "the server is shutting down" in err
    resume = f"entitlements watch --target {server.target} leaving shuffle_play --resume-token"
    assert f"{resume} {token}" in err
