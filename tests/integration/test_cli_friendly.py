"""The CLI as people expect it (issue 15, item 4), through the real console script
against real servers: help and examples, --json, --version, the batch command, hints for
unknown features and never-seen users, a clear error without a server, development tokens
found from any folder of the checkout, read-your-writes without copying tokens, and
history through the server's AdminService."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import grpc
import pytest

import service
from entitlements.v1 import entitlement_service_pb2, entitlement_service_pb2_grpc
from service.cli.parser import build_parser
from service.grpc_api.auth import bearer_metadata
from tests.support.cli import Served, dev_tokens, run_cli, serve
from tests.support.processes import ENTITLEMENTS

pytestmark = pytest.mark.subprocess

READS = ("get-entitlement", "list-entitlements", "batch-get-entitlements", "get-offers")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("cli-friendly")
    run_cli("seed-demo", cwd=folder)
    server = serve(folder, "--workers", "1")
    try:
        yield server
    finally:
        server.stop()


def cli(served: Served, *args: str, check: bool = True, cwd: Path | None = None) -> str:
    result = run_cli(*args, "--target", served.target, cwd=cwd or served.folder, check=check)
    return result.stdout + result.stderr


def test_every_subcommand_has_a_description_examples_and_argument_help() -> None:
    overview = run_cli("--help", cwd=Path.cwd()).stdout
    commands = re.findall(r"^    ([a-z][a-z-]+)", overview, re.MULTILINE)
    assert {"serve", "history", "batch-get-entitlements", *READS} <= set(commands)
    for command in commands:
        text = run_cli(command, "--help", cwd=Path.cwd()).stdout
        assert "examples:\n  entitlements" in text, command
        description = text.split("\n\n")[1]
        assert len(description) > 40, command
        assert not description.startswith("options"), command
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_consistency_token_and_credential_are_told_apart(served: Served) -> None:
    text = run_cli("get-entitlement", "--help", cwd=served.folder).stdout
    flat = " ".join(text.split())
    assert "--consistency-token CONSISTENCY_TOKEN, --token CONSISTENCY_TOKEN" in flat
    assert "not the bearer credential; that is --credential" in flat
    assert "--credential BEARER_TOKEN the bearer token that authenticates the call" in flat
    assert "not a consistency token" in flat
    # Both spellings of the consistency token work.
    token = re.search(r"consistency token: (\S+)", cli(served, "grant", "tok-user", "--feature",
                      "offline_downloads")).group(1)  # type: ignore[union-attr]  # fmt: skip
    for flag in ("--token", "--consistency-token"):
        out = cli(served, "get-entitlement", "tok-user", "offline_downloads", flag, token)
        assert "GRANTED" in out


def test_version() -> None:
    out = run_cli("--version", cwd=Path.cwd()).stdout.strip()
    version = metadata.version("entitlement-offer-service")
    assert out == f"entitlements {version} (API entitlements.v1 {service.API_VERSION})"


def test_json_on_every_client_command(served: Served) -> None:
    outputs = {
        "get-entitlement": cli(served, "get-entitlement", "demo-active", "offline_downloads",
                               "--json"),
        "list-entitlements": cli(served, "list-entitlements", "demo-grace", "--json"),
        "batch-get-entitlements": cli(served, "batch-get-entitlements",
                                      "demo-active:offline_downloads", "--json"),
        "get-offers": cli(served, "get-offers", "demo-free", "--market", "US", "--platform",
                          "web", "--json"),
        "record-event": cli(served, "record-event", "json-user", "--type", "purchased",
                            "--subscription", "sub-json", "--store", "web", "--plan",
                            "premium_individual", "--period-days", "30", "--json"),
        "grant": cli(served, "grant", "json-user", "--feature", "audiobook_hours", "--quota",
                     "5", "--json"),
        "redeem-offer": cli(served, "redeem-offer", "json-free", "premium-individual-trial-1m",
                            "--market", "US", "--platform", "ios", "--store", "app_store",
                            "--json"),
        "history": cli(served, "history", "json-user", "--json"),
    }  # fmt: skip
    answers = {command: json.loads(out) for command, out in outputs.items()}
    grant_id = answers["grant"]["grant"]["grant_id"]
    answers["revoke"] = json.loads(cli(served, "revoke", "json-user", grant_id, "--json"))
    assert answers["get-entitlement"]["entitlement"]["granted"] is True
    assert len(answers["list-entitlements"]["entitlements"]) > 3
    assert answers["batch-get-entitlements"]["entitlements"][0]["user_id"] == "demo-active"
    assert answers["get-offers"]["offers"]
    assert answers["record-event"]["outcome"] == "EVENT_OUTCOME_APPLIED"
    assert answers["grant"]["grant"]["quota_value"] == "5"
    assert answers["grant"]["consistency_token"]
    assert answers["redeem-offer"]["subscription"]["status"] == "SUBSCRIPTION_STATUS_TRIALING"
    assert answers["revoke"]["grant"]["revoked_at"]
    assert [e["kind"] for e in answers["history"]["entries"]] == ["subscription_event", "grant"]


def test_batch_from_arguments_and_stdin(served: Served) -> None:
    out = cli(served, "batch-get-entitlements", "demo-active:offline_downloads",
              "demo-free:offline_downloads")  # fmt: skip
    assert re.search(r"demo-active offline_downloads: GRANTED.*\n.*demo-free offline_downloads: "
                     r"DENIED", out)  # fmt: skip
    # More pairs than one call takes (100), from stdin, in both line forms.
    lines = ["# users and features", ""] + [f"batch-{i} shuffle_play" for i in range(120)]
    lines.append("demo-active:offline_downloads")
    result = run_cli_stdin(served, "\n".join(lines) + "\n", "batch-get-entitlements", "--json")
    answers = json.loads(result)["entitlements"]
    assert len(answers) == 121
    assert answers[119]["user_id"] == "batch-119"
    assert answers[120]["granted"] is True
    bad = run_cli("batch-get-entitlements", "--target", served.target, "no-colon",
                  cwd=served.folder, check=False)  # fmt: skip
    assert bad.returncode == 2
    assert "expected USER:FEATURE" in bad.stderr


def run_cli_stdin(served: Served, stdin: str, *args: str) -> str:
    import subprocess

    from tests.support.cli import CLEAN_ENV

    result = subprocess.run(
        [ENTITLEMENTS, *args, "--target", served.target],
        input=stdin, capture_output=True, text=True, timeout=60, check=True,
        cwd=served.folder, env=CLEAN_ENV,
    )  # fmt: skip
    return result.stdout


def test_unknown_feature_lists_the_catalog_and_suggests(served: Served) -> None:
    result = run_cli("get-entitlement", "--target", served.target, "demo-active",
                     "ofline_downloads", cwd=served.folder, check=False)  # fmt: skip
    assert result.returncode == 1
    assert "'ofline_downloads': did you mean offline_downloads?" in result.stderr
    assert re.search(r"the server's catalog has: .*audiobook_hours", result.stderr)


def test_a_user_never_seen_is_pointed_out(served: Served) -> None:
    typo = run_cli("get-entitlement", "--target", served.target, "demo-actve",
                   "offline_downloads", cwd=served.folder)  # fmt: skip
    assert "DENIED" in typo.stdout
    assert "never seen user 'demo-actve'" in typo.stderr
    known = run_cli("get-entitlement", "--target", served.target, "demo-free",
                    "offline_downloads", cwd=served.folder)  # fmt: skip
    assert "never seen" not in known.stderr
    as_json = json.loads(cli(served, "list-entitlements", "demo-actve", "--json"))
    assert all(e["user_never_seen"] for e in as_json["entitlements"])


def test_no_server_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("get-entitlement", "--target", "127.0.0.1:1", "u", "offline_downloads",
                     cwd=tmp_path, check=False)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith(
        "error: cannot reach the server at 127.0.0.1:1 (is `make run` up?)"
    )
    assert "failed to connect to all addresses" not in result.stderr


def test_development_tokens_are_found_from_any_folder_below(served: Served) -> None:
    deeper = served.folder / "some" / "sub" / "folder"
    deeper.mkdir(parents=True, exist_ok=True)
    out = cli(served, "get-entitlement", "demo-active", "offline_downloads", cwd=deeper)
    assert "GRANTED" in out
    inside_data = cli(served, "list-entitlements", "demo-active", cwd=served.folder / "data")
    assert "offline_downloads: GRANTED" in inside_data


def test_grant_prints_the_quota(served: Served) -> None:
    out = cli(served, "grant", "quota-user", "--feature", "audiobook_hours", "--quota", "30")
    assert re.search(r"grant of audiobook_hours \(quota 30\)", out)


def test_reads_after_a_write_see_it_on_every_worker(tmp_path: Path) -> None:
    """Two workers, each with its own cache, and no change feed (so nothing but a token
    makes the other worker see the write): after a write through the CLI, every read
    through the CLI sees it, and the printed read-back command does too."""
    server = serve(tmp_path, "--storage", "sqlite:///data/e.db", "--workers", "2",
                   env={"ENTITLEMENTS_FEED_POLL_SECONDS": "0"})  # fmt: skip
    try:
        service_token = dev_tokens(tmp_path)["service"]
        run_cli("grant", "--target", server.target, "ryw-user", "--feature",
                "audiobook_hours", "--quota", "3", cwd=tmp_path)  # fmt: skip
        # Warm both workers' caches with the user's state before the write (each channel
        # is one connection, handed to either worker).
        for _ in range(16):
            with grpc.insecure_channel(server.target) as channel:
                answer = entitlement_service_pb2_grpc.EntitlementServiceStub(
                    channel
                ).GetEntitlement(
                    entitlement_service_pb2.GetEntitlementRequest(
                        user_id="ryw-user", feature_id="offline_downloads"
                    ),
                    metadata=bearer_metadata(service_token),
                    timeout=10,
                )
            assert not answer.entitlement.granted
        written = run_cli("grant", "--target", server.target, "ryw-user", "--feature",
                          "offline_downloads", cwd=tmp_path).stdout  # fmt: skip
        for _ in range(6):
            read = run_cli("get-entitlement", "--target", server.target, "ryw-user",
                           "offline_downloads", cwd=tmp_path).stdout  # fmt: skip
            assert "GRANTED" in read
        command = re.search(r"read it back: (.+)", written).group(1)  # type: ignore[union-attr]
        words = shlex.split(command)
        assert words[0] == "entitlements"
        assert "--consistency-token" in words
        elsewhere = tmp_path / "elsewhere"  # no remembered tokens there: only the flag's
        elsewhere.mkdir()
        read_back = run_cli(*words[1:], cwd=elsewhere, env={
            "ENTITLEMENTS_DATA_DIR": str(elsewhere), "ENTITLEMENTS_CREDENTIAL": service_token,
        }).stdout  # fmt: skip
        assert "GRANTED" in read_back
    finally:
        server.stop()


def test_history_reads_the_servers_store(tmp_path: Path) -> None:
    """The server runs on memory://: history must come from it, not from a SQLite file
    beside the command (which does not exist). One worker: each would have its own
    memory store."""
    server = serve(tmp_path, "--storage", "memory://", "--workers", "1")
    try:
        run_cli("grant", "--target", server.target, "support-user", "--plan",
                "premium_individual", "--days", "7", cwd=tmp_path)  # fmt: skip
        out = run_cli("history", "--target", server.target, "support-user", cwd=tmp_path).stdout
        assert "history of support-user (version 1)" in out
        assert "grant grant-" in out
        assert not (tmp_path / "data" / "entitlements.db").exists()
        unseen = run_cli("history", "--target", server.target, "nobody-1", cwd=tmp_path)
        assert "(nothing recorded)" in unseen.stdout
        assert "never seen" in unseen.stderr
        # Support tooling needs the admin credential: the service token is refused.
        refused = run_cli(
            "history", "--target", server.target, "support-user", cwd=tmp_path, check=False,
            env={"ENTITLEMENTS_CREDENTIAL": dev_tokens(tmp_path)["service"]},
        )  # fmt: skip
        assert refused.returncode == 1
        assert "PERMISSION_DENIED" in refused.stderr
    finally:
        server.stop()
