"""SQLite only: what the database file holds (UTC text, processed requests with their
JSON responses, history), and that it keeps them across reopening, repositories,
processes and migrations.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from service.domain.account import AccountState
from service.domain.errors import IdempotencyConflict
from storage.repository import Applied, HistoryDraft, IdempotencyKey, Mutation
from storage.sqlite import SqliteRepository
from tests.contract.builders import (
    RECORDED,
    RICH,
    T0,
    key,
    migration_files,
    migration_rows,
    redeem,
)
from tests.state_writes import write_state


def test_sqlite_rejects_naive_timestamps(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    try:
        naive = dataclasses.replace(
            AccountState.new("u"), student_verified_until=datetime(2024, 1, 1)
        )
        with pytest.raises(ValueError, match="naive"):
            write_state(repo, "u", lambda _: naive)
        assert repo.load("u").account == AccountState.new("u")
    finally:
        repo.close()


def test_sqlite_stores_utc_iso_text(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    try:
        plus_two = datetime(2024, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
        write_state(repo, "u", lambda s: dataclasses.replace(s, student_verified_until=plus_two))
    finally:
        repo.close()
    connection = sqlite3.connect(sqlite_path)
    try:
        row = connection.execute("SELECT student_verified_until FROM users").fetchone()
    finally:
        connection.close()
    assert row == ("2024-06-01T10:00:00.000000+00:00",)


def test_sqlite_keys_and_history_survive_close_and_reopen(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    first = repo.apply("u1", key("r1"), redeem("o1", drafts=2), RECORDED)
    history = repo.history("u1")
    assert len(history) == 2
    repo.close()

    reopened = SqliteRepository(sqlite_path)
    try:
        assert reopened.history("u1") == history
        calls: list[AccountState] = []
        replay = reopened.apply("u1", key("r1"), redeem("o1", calls), RECORDED)
        assert calls == []
        assert replay == Applied(first.state, 1, first.response, replayed=True)
        with pytest.raises(IdempotencyConflict):
            reopened.apply("u1", key("r1", "fp-2"), redeem("o1"), RECORDED)
        write_state(reopened, "u1", lambda _: AccountState.new("u1"))
        assert reopened.apply("u1", key("r1"), redeem("o1"), RECORDED).replayed is True
        assert reopened.history("u1") == history
    finally:
        reopened.close()


def test_sqlite_two_repositories_on_one_file_see_each_others_keys(sqlite_path: Path) -> None:
    one, two = SqliteRepository(sqlite_path), SqliteRepository(sqlite_path)
    try:
        first = one.apply("shared", key("r1"), redeem("o1"), RECORDED)
        calls: list[AccountState] = []
        assert two.apply("shared", key("r1"), redeem("o1", calls), RECORDED) == Applied(
            first.state, 1, first.response, replayed=True
        )
        assert calls == []
        with pytest.raises(IdempotencyConflict):
            two.apply("shared", key("r1", "fp-2"), redeem("o1"), RECORDED)
        assert two.apply("shared", key("r2"), redeem("o2"), RECORDED).version == 2
        assert one.apply("shared", key("r2"), redeem("o2"), RECORDED).replayed is True
        assert one.history("shared") == two.history("shared")
        assert [e.version for e in one.history("shared")] == [1, 2]
    finally:
        one.close()
        two.close()


_APPLY_SCRIPT = """
import dataclasses, json, sys
from datetime import UTC, datetime
from storage.repository import HistoryDraft, IdempotencyKey, Mutation
from storage.sqlite import SqliteRepository

def mutate(state):
    return Mutation(
        dataclasses.replace(state, home_market="FI"),
        {"from": "child", "version_seen": state.version},
        (HistoryDraft("grant", "g-1", datetime(2024, 1, 1, tzinfo=UTC), "granted g-1"),),
    )

repo = SqliteRepository(sys.argv[1])
applied = repo.apply("u", IdempotencyKey("grant", "g-1", "fp-1"), mutate, datetime.now(UTC))
print(json.dumps([applied.version, applied.replayed, applied.response]), flush=True)
repo.close()
"""


def test_sqlite_replay_is_detected_across_processes(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)  # open before the other process writes
    try:
        write_state(repo, "u", lambda s: s)
        result = subprocess.run(
            [sys.executable, "-c", _APPLY_SCRIPT, str(sqlite_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        version, replayed, response = json.loads(result.stdout)
        assert (version, replayed) == (2, False)

        calls: list[AccountState] = []
        grant_key = IdempotencyKey("grant", "g-1", "fp-1")
        replay = repo.apply("u", grant_key, redeem("never", calls), RECORDED)
        assert calls == []
        assert (replay.replayed, replay.version, replay.response) == (True, 2, response)
        assert replay.state.home_market == "FI"
        assert [(e.kind, e.reference, e.version) for e in repo.history("u")] == [
            ("grant", "g-1", 2)
        ]
        with pytest.raises(IdempotencyConflict):
            repo.apply(
                "u", dataclasses.replace(grant_key, fingerprint="fp-2"), redeem("x"), RECORDED
            )
    finally:
        repo.close()


def test_sqlite_apply_stores_json_response_and_utc_history(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    plus_two = timezone(timedelta(hours=2))
    effective = datetime(2024, 6, 1, 12, 0, tzinfo=plus_two)
    recorded = datetime(2024, 6, 2, 12, 0, tzinfo=plus_two)

    def mutate(state: AccountState) -> Mutation:
        # A tuple and unsorted keys: stored as canonical JSON, answered as the replay is.
        return Mutation(
            state,
            {"z": (1, 2), "a": {"y": None, "b": "ü"}},
            (HistoryDraft("grant", "g-1", effective, "granted"),),
        )

    try:
        first = repo.apply("u", key("r1"), mutate, recorded)
        replay = repo.apply("u", key("r1"), mutate, recorded)
        assert first.response == replay.response == {"a": {"b": "ü", "y": None}, "z": [1, 2]}
    finally:
        repo.close()
    connection = sqlite3.connect(sqlite_path)
    try:
        request = connection.execute(
            "SELECT kind, request_id, fingerprint, response, version, recorded_at"
            " FROM processed_requests"
        ).fetchall()
        history = connection.execute(
            "SELECT user_id, effective_at, recorded_at, version FROM history"
        ).fetchall()
    finally:
        connection.close()
    assert len(request) == 1
    kind, request_id, fingerprint, response, version, recorded_text = request[0]
    assert (kind, request_id, fingerprint, version) == ("redeem", "r1", "fp-1", 1)
    assert response == json.dumps(json.loads(response), sort_keys=True, separators=(",", ":"))
    assert recorded_text == "2024-06-02T10:00:00.000000+00:00"
    assert history == [
        ("u", "2024-06-01T10:00:00.000000+00:00", "2024-06-02T10:00:00.000000+00:00", 1)
    ]


def test_sqlite_apply_rejects_what_it_cannot_store_and_writes_nothing(
    sqlite_path: Path,
) -> None:
    repo = SqliteRepository(sqlite_path)
    try:
        with pytest.raises(ValueError, match="naive"):
            repo.apply("u", key("r1"), redeem("o1"), datetime(2024, 1, 1))
        with pytest.raises(ValueError, match="naive"):
            repo.apply("u", key("r1"), redeem("o1", effective_at=datetime(2024, 1, 1)), RECORDED)

        def not_json(state: AccountState) -> Mutation:
            return Mutation(state, {"when": T0})

        with pytest.raises(TypeError):
            repo.apply("u", key("r1"), not_json, RECORDED)
        assert repo.load("u").account == AccountState.new("u")
        assert repo.history("u") == []
        assert repo.apply("u", key("r1"), redeem("o1"), RECORDED) == Applied(
            repo.load("u").account, 1, {"offer_id": "o1", "count": 1, "tags": ["a", "b"]}, False
        )
    finally:
        repo.close()


def test_sqlite_database_from_before_0002_is_migrated_keeping_its_data(
    sqlite_path: Path,
) -> None:
    repo = SqliteRepository(sqlite_path)
    write_state(repo, RICH.user_id, lambda _: RICH)
    repo.close()
    # Make it look like a database only 0001 was applied to.
    connection = sqlite3.connect(sqlite_path, isolation_level=None)
    try:
        connection.execute("DROP TABLE history")
        connection.execute("DROP TABLE processed_requests")
        connection.execute("ALTER TABLE household_memberships DROP COLUMN member_user_id")
        connection.execute("DROP TABLE user_changes")
        connection.execute("DROP TABLE IF EXISTS dead_letters")
        connection.execute("DROP TABLE IF EXISTS store_accounts")
        connection.execute("DROP TABLE subscription_events")
        connection.execute("ALTER TABLE subscriptions DROP COLUMN folded_events")
        connection.execute("DELETE FROM schema_migrations WHERE version >= 2")
    finally:
        connection.close()
    assert [name for _, name in migration_rows(sqlite_path)] == ["0001_initial"]

    repo = SqliteRepository(sqlite_path)
    try:
        assert [name for _, name in migration_rows(sqlite_path)] == migration_files()
        # (Kept events are of 0006, dropped above with its table.)
        expected = dataclasses.replace(RICH, version=1, subscription_events=())
        assert repo.load(RICH.user_id).account == expected
        assert repo.history(RICH.user_id) == []
        assert repo.apply(RICH.user_id, key("r1"), redeem("o1"), RECORDED).version == 2
    finally:
        repo.close()
