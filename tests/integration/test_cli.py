"""The README's flow through the real console script: seed the demo users into SQLite,
serve on a free port, ask with the client subcommands, stop with SIGTERM.

The server runs out of the box, as `make run` does: in a fresh working folder without any
credentials configured, so `entitlements serve` generates development credentials in
data/ and the client subcommands pick them up from there."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from entitlements.v1 import common_pb2, subscription_event_service_pb2_grpc
from entitlements.v1 import subscription_event_service_pb2 as ses
from service import cli
from service.cli.choices import EVENT_TYPES, GRANT_KINDS, PLATFORMS, STORES
from service.domain.events import EventType
from service.domain.identity import user_digest
from service.grpc_api.auth import bearer_metadata
from tests.support.cli import Served, dev_tokens, dev_tokens_in, run_cli, serve
from tests.support.harness import ADMIN_TOKEN, write_test_credentials
from tests.support.polling import eventually


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("cli")
    # The README's `make run`: seed then serve the default data/entitlements.db.
    seeded = run_cli("seed-demo", cwd=folder)
    assert "demo-family-member" in seeded.stdout
    server = serve(folder)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.subprocess
def test_get_entitlement_prints_the_decision(served: Served) -> None:
    granted = run_cli(
        "get-entitlement", "--target", served.target, "demo-active", "offline_downloads",
        cwd=served.folder,
    )  # fmt: skip
    assert "GRANTED" in granted.stdout
    assert "sub-active" in granted.stdout
    denied = run_cli(
        "get-entitlement", "--target", served.target, "demo-free", "offline_downloads",
        cwd=served.folder,
    )  # fmt: skip
    assert "DENIED (no_entitling_source)" in denied.stdout


@pytest.mark.subprocess
def test_list_entitlements(served: Served) -> None:
    out = run_cli(
        "list-entitlements", "--target", served.target, "demo-family-member", cwd=served.folder
    ).stdout
    assert "audiobook_hours: DENIED (household_role)" in out
    assert re.search(r"offline_downloads: GRANTED .*household household-[0-9a-f]{20}\b", out)


@pytest.mark.subprocess
def test_get_offers(served: Served) -> None:
    out = run_cli(
        "get-offers", "--target", served.target, "demo-lapsed", "--market", "US",
        "--platform", "web", "--include-ineligible", cwd=served.folder,
    ).stdout  # fmt: skip
    assert "premium-individual-winback-3m: winback" in out
    assert "premium-individual-trial-1m: had_premium_before" in out


@pytest.mark.subprocess
def test_bad_input_prints_field_violations(served: Served) -> None:
    result = run_cli(
        "get-entitlement", "--target", served.target, "demo-free", "teleportation",
        cwd=served.folder, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "INVALID_ARGUMENT" in result.stderr
    assert "feature_id: unknown feature 'teleportation'" in result.stderr


@pytest.mark.subprocess
def test_serve_generates_development_credentials_and_says_where_they_are(served: Served) -> None:
    """Owner-only: the data folder 0700 (made by seed-demo's database), both files 0600;
    the server's output (its log) names the tokens' file, never a token (issue 25)."""
    data = served.folder / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    tokens_file = data / "dev-tokens.json"
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "dev-credentials.yaml").stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "entitlements.db").stat().st_mode) == 0o600
    tokens = dev_tokens(served.folder)
    assert set(tokens) == {"admin", "service"}
    assert all(len(token) >= 40 for token in tokens.values())
    credentials = (data / "dev-credentials.yaml").read_text()
    assert "role: admin" in credentials
    assert "role: service" in credentials
    assert not any(token in credentials for token in tokens.values())  # digests only
    output = served.text()
    assert "generated development credentials" in output
    assert str(tokens_file) in output
    for token in tokens.values():
        assert token not in output


@pytest.mark.subprocess
def test_serve_makes_its_own_data_folder_owner_only(tmp_path: Path) -> None:
    """serve alone (no seed-demo first), in a fresh folder, with its data folder two
    levels down: every folder it creates is 0700, whatever the umask."""
    data = tmp_path / "state" / "data"
    server = serve(
        tmp_path,
        "--storage",
        f"sqlite:///{tmp_path / 'db' / 'nested' / 'entitlements.db'}",
        env={"ENTITLEMENTS_DATA_DIR": str(data)},
    )
    try:
        for folder in (tmp_path / "state", data, tmp_path / "db", tmp_path / "db" / "nested"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        assert stat.S_IMODE((data / "dev-credentials.yaml").stat().st_mode) == 0o600
        assert not any(token in server.text() for token in dev_tokens_in(data).values())
    finally:
        server.stop()


@pytest.mark.subprocess
def test_credential_flag_and_environment(served: Served) -> None:
    args = ("get-entitlement", "--target", served.target, "demo-active", "offline_downloads")
    wrong = run_cli(*args, "--credential", "not-a-known-token", cwd=served.folder, check=False)
    assert wrong.returncode == 1
    assert "UNAUTHENTICATED" in wrong.stderr
    assert "--credential" in wrong.stderr
    wrong_env = run_cli(
        *args, cwd=served.folder, check=False, env={"ENTITLEMENTS_CREDENTIAL": "nope"}
    )
    assert "UNAUTHENTICATED" in wrong_env.stderr
    admin = dev_tokens(served.folder)["admin"]  # read commands accept the admin token too
    assert "GRANTED" in run_cli(*args, "--credential", admin, cwd=served.folder).stdout
    env = {"ENTITLEMENTS_CREDENTIAL": admin}
    assert "GRANTED" in run_cli(*args, cwd=served.folder, env=env).stdout
    # With a data folder holding no development tokens and without a credential: refused,
    # saying where the tokens were looked for.
    empty = served.folder / "empty-data"
    empty.mkdir(exist_ok=True)
    elsewhere = run_cli(
        *args, cwd=served.folder, check=False, env={"ENTITLEMENTS_DATA_DIR": str(empty)}
    )
    assert "UNAUTHENTICATED" in elsewhere.stderr
    assert "no development tokens found" in elsewhere.stderr


@pytest.mark.subprocess
def test_admin_calls_are_audited_on_stderr(served: Served) -> None:
    admin = dev_tokens(served.folder)["admin"]
    with grpc.insecure_channel(served.target) as channel:
        stub = subscription_event_service_pb2_grpc.SubscriptionEventServiceStub(channel)
        request = ses.RevokeEntitlementRequest(
            request_id="cli-audit-1", user_id="demo-free", grant_id="no-such-grant"
        )
        try:
            stub.RevokeEntitlement(request, metadata=bearer_metadata(admin), timeout=5)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
    assert code not in {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
    record = wait_for_audit_line(served, "cli-audit-1")
    assert record["principal"] == "dev-admin"
    assert record["method"] == "entitlements.v1.SubscriptionEventService/RevokeEntitlement"
    assert record["outcome"] == code.name
    assert record["user"] == user_digest("demo-free")


def wait_for_audit_line(served: Served, request_id: str) -> dict[str, object]:
    def audit_lines() -> list[str]:
        return [
            line
            for line in list(served.output)
            if line.startswith("{") and f'"request_id":"{request_id}"' in line
        ]

    eventually(
        lambda: bool(audit_lines()),
        5,
        0.05,
        lambda: f"no audit line for {request_id}:\n{served.text()}",
    )
    record: dict[str, object] = json.loads(audit_lines()[0])
    return record


@pytest.mark.subprocess
def test_restart_reuses_the_development_credentials(served: Served) -> None:
    before = dev_tokens(served.folder)
    credentials = served.folder / "data" / "dev-credentials.yaml"
    credentials.chmod(0o644)  # as earlier versions wrote it
    again = serve(served.folder)  # a second process on the same data folder
    try:
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        assert "using the development credentials" in again.text()
        assert not any(token in again.text() for token in before.values())
        assert dev_tokens(served.folder) == before
        out = run_cli(
            "list-entitlements", "--target", again.target, "demo-active", cwd=served.folder
        ).stdout
        assert "offline_downloads: GRANTED" in out
    finally:
        again.stop()


@pytest.mark.subprocess
def test_explicit_credentials_file_and_audit_file(tmp_path: Path) -> None:
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    audit_file = tmp_path / "audit" / "admin.jsonl"
    server = serve(
        tmp_path,
        "--storage",
        "memory://",
        env={
            "ENTITLEMENTS_CREDENTIALS_FILE": str(credentials),
            "ENTITLEMENTS_AUDIT_LOG_FILE": str(audit_file),
        },
    )
    try:
        assert not (tmp_path / "data").exists()  # no development credentials generated
        args = ("get-entitlement", "--target", server.target, "demo-free", "offline_downloads")
        refused = run_cli(*args, cwd=tmp_path, check=False)
        assert "UNAUTHENTICATED" in refused.stderr
        assert "DENIED" in run_cli(*args, "--credential", ADMIN_TOKEN, cwd=tmp_path).stdout
        with grpc.insecure_channel(server.target) as channel:
            stub = subscription_event_service_pb2_grpc.SubscriptionEventServiceStub(channel)
            with pytest.raises(grpc.RpcError):
                stub.RecordSubscriptionEvent(
                    ses.RecordSubscriptionEventRequest(event_id="evt-audit", user_id="u-1"),
                    timeout=5,
                )  # no credential: refused, and audited as such
    finally:
        server.stop()
    assert stat.S_IMODE(audit_file.parent.stat().st_mode) == 0o700
    (line,) = audit_file.read_text().splitlines()
    record = json.loads(line)
    assert record["principal"] is None
    assert record["outcome"] == "UNAUTHENTICATED"
    assert record["request_id"] == "evt-audit"
    assert "u-1" not in line


def test_enum_choices_are_the_domain_values() -> None:
    """The enum flags' choices, now built from the domain enums and convert's maps, are the
    strings (and send the proto values) they always were."""
    assert sorted(PLATFORMS) == ["android", "desktop", "ios", "web"]
    assert sorted(STORES) == ["app_store", "google_play", "partner", "web"]
    assert sorted(GRANT_KINDS) == ["partner", "promotional", "support"]
    assert sorted(EVENT_TYPES) == sorted(t.name.lower() for t in EventType)
    assert STORES["app_store"] == common_pb2.STORE_APP_STORE
    assert PLATFORMS["desktop"] == common_pb2.PLATFORM_DESKTOP
    assert GRANT_KINDS["promotional"] == ses.GRANT_KIND_PROMOTIONAL
    assert EVENT_TYPES["grace_expired"] == ses.SUBSCRIPTION_EVENT_TYPE_GRACE_EXPIRED


@pytest.fixture
def no_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith("ENTITLEMENTS_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("no_settings_from_environment")
def test_bad_input_is_an_error_message(capsys: pytest.CaptureFixture[str]) -> None:
    # Refused before any channel is opened: no server needed.
    naive = cli.main(
        ["record-event", "--target", "127.0.0.1:1", "--type", "purchased", "--subscription",
         "s-1", "--store", "web", "--occurred-at", "2026-01-01T00:00", "u-1"]
    )  # fmt: skip
    assert naive == 2
    assert capsys.readouterr().err == (
        "error: --occurred-at needs a time zone, e.g. 2026-11-26T10:00:00Z\n"
    )
    out_of_range = cli.main(
        ["grant", "--target", "127.0.0.1:1", "--feature", "f", "--quota", str(2**64), "u-1"]
    )
    assert out_of_range == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert cli.main(["seed-demo", "--storage", "nosuch://"]) == 2
    assert capsys.readouterr().err.startswith("error: unsupported storage URL 'nosuch://'")
    # history asks the server; the store flag it once took is refused with the reason.
    assert cli.main(["history", "--storage", "sqlite:///x.db", "u-1"]) == 2
    assert capsys.readouterr().err.startswith("error: history asks the server now")


@pytest.mark.usefixtures("no_settings_from_environment")
def test_a_bug_is_not_reported_as_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ValueError that is not the user's (here: a row this build cannot read) ends the
    command with its traceback, not as `error: ...` blaming the input."""
    database = tmp_path / "entitlements.db"
    storage = f"sqlite:///{database}"
    assert cli.main(["seed-demo", "--storage", storage]) == 0
    with sqlite3.connect(database) as connection:
        connection.execute(
            "UPDATE subscriptions SET status = 'no-such-status' WHERE user_id = 'demo-active'"
        )
    connection.close()
    capsys.readouterr()
    with pytest.raises(ValueError, match="no-such-status"):
        cli.main(["seed-demo", "--storage", storage])  # reads demo-active's row again
    assert "error:" not in capsys.readouterr().err


@pytest.mark.subprocess
def test_a_setting_out_of_range_is_an_error_message(tmp_path: Path) -> None:
    result = run_cli(
        "serve", "--port", "0", "--storage", "memory://", cwd=tmp_path, check=False,
        env={"ENTITLEMENTS_THREADS": "0"},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: threads must be greater than 0, got 0"


@pytest.mark.subprocess
def test_a_grant_repeated_with_its_request_id_replays(served: Served) -> None:
    """`grant --request-id ID --days N` run again (a retry after an error) is the same
    request, so it gets the first answer instead of ALREADY_EXISTS."""
    command = (
        "grant", "--target", served.target, "--feature", "offline_downloads", "--days", "14",
        "--request-id", "cli-retry-1", "cli-retry-user",
    )  # fmt: skip
    first = run_cli(*command, cwd=served.folder)
    time.sleep(0.05)
    again = run_cli(*command, cwd=served.folder)
    grant_lines = [line for line in first.stdout.splitlines() if "grant-" in line]
    assert grant_lines
    assert grant_lines == [line for line in again.stdout.splitlines() if "grant-" in line]
