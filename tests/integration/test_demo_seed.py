"""`make run` (seed-demo, then serve, on data/entitlements.db) started again: the demo
users keep what happened to them meanwhile, and their history tells why they have what
they have (issue 25: state reset on every start, history empty). Through the console
script and a real server, as `make run` runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.catalog.demo import DEMO_USER_IDS
from storage.sqlite import SqliteRepository
from tests.support.cli import run_cli, serve

pytestmark = pytest.mark.subprocess


def test_make_run_again_keeps_the_demo_users_state_and_history(tmp_path: Path) -> None:
    seeded = run_cli("seed-demo", cwd=tmp_path).stdout
    assert "seeded 11 demo users" in seeded
    server = serve(tmp_path)
    try:
        history = run_cli("history", "demo-active", "--target", server.target, cwd=tmp_path)
        # Why demo-active has Premium: the web checkout's purchase and its renewal.
        assert "(nothing recorded)" not in history.stdout
        assert "PURCHASED on sub-active" in history.stdout
        assert "RENEWED on sub-active" in history.stdout
        # Meanwhile the subscription expires (the checkout's event, through the API).
        run_cli(
            "record-event", "demo-active", "--type", "expired", "--subscription", "sub-active",
            "--store", "web", "--target", server.target, cwd=tmp_path,
        )  # fmt: skip
        denied = run_cli(
            "get-entitlement", "demo-active", "ad_free_playback", "--target", server.target,
            cwd=tmp_path,
        )  # fmt: skip
        assert "DENIED" in denied.stdout
    finally:
        server.stop()

    # `make run` again: seed-demo leaves a store that holds the demo users as it is.
    again = run_cli("seed-demo", cwd=tmp_path).stdout
    assert "holds the demo users already (11 of 11): nothing written" in again
    server = serve(tmp_path)
    try:
        still = run_cli(
            "get-entitlement", "demo-active", "ad_free_playback", "--target", server.target,
            cwd=tmp_path,
        )  # fmt: skip
        assert "DENIED" in still.stdout, still.stdout
        history = run_cli("history", "demo-active", "--target", server.target, cwd=tmp_path)
        assert "EXPIRED on sub-active" in history.stdout
    finally:
        server.stop()


def test_every_demo_user_has_a_history_telling_why(tmp_path: Path) -> None:
    database = tmp_path / "entitlements.db"
    run_cli("seed-demo", "--storage", f"sqlite:///{database}", cwd=tmp_path)
    repository = SqliteRepository(database)
    try:
        kinds = {user: [e.kind for e in repository.history(user)] for user in DEMO_USER_IDS}
    finally:
        repository.close()
    assert all(kinds.values()), kinds
    assert kinds["demo-active"] == ["subscription_event", "subscription_event"]
    assert kinds["demo-family-manager"][-2:] == ["household", "household_seat"]
    assert kinds["demo-family-member"] == ["household_join"]
    assert kinds["demo-student"] == ["student_verification"]
    assert kinds["demo-promo"] == ["grant"]


def test_reseed_writes_the_situations_again_as_of_now(tmp_path: Path) -> None:
    database = tmp_path / "entitlements.db"
    storage = f"sqlite:///{database}"
    run_cli("seed-demo", "--storage", storage, cwd=tmp_path)
    repository = SqliteRepository(database)
    try:
        before = {user: repository.load(user).account for user in DEMO_USER_IDS}
        reseeded = run_cli("seed-demo", "--storage", storage, "--reseed", cwd=tmp_path)
        assert "seeded again 11 demo users" in reseeded.stdout
        after = {user: repository.load(user).account for user in DEMO_USER_IDS}
        history = repository.history("demo-active")
    finally:
        repository.close()
    # New events on new subscriptions: the situations hold as of now, history keeps both.
    first, second = after["demo-active"].subscriptions
    assert (first.subscription_id, second.subscription_id.startswith("sub-active-")) == (
        "sub-active",
        True,
    )
    assert len(history) == 4
    # The household is the same one (its writes are replays).
    assert after["demo-family-member"].memberships == before["demo-family-member"].memberships
    assert all(after[user].version >= before[user].version for user in DEMO_USER_IDS)
