"""SQLite only: the database file and its faults (missing, replaced, corrupt, locked past
the call's budget, read-only, closed while calls run).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from service.domain.account import AccountState
from service.domain.deadlines import within_store_deadline
from service.domain.errors import DeadlineExceeded, StoreUnavailable
from storage.sqlite import DatabaseNotFound, SchemaNotReady, SqliteRepository
from tests.contract.builders import (
    RECORDED,
    key,
    migration_files,
    redeem,
)
from tests.state_writes import write_state


def test_sqlite_without_create_opens_an_existing_database_only(sqlite_path: Path) -> None:
    with pytest.raises(DatabaseNotFound, match="entitlements migrate"):
        SqliteRepository(sqlite_path, create=False)
    assert not sqlite_path.parent.exists()  # nothing created, not even the directory

    SqliteRepository(sqlite_path, create=True).close()
    repo = SqliteRepository(sqlite_path, create=False)
    try:
        assert write_state(repo, "u", lambda s: s).version == 1
    finally:
        repo.close()


def test_sqlite_without_create_needs_every_migration(sqlite_path: Path) -> None:
    sqlite_path.parent.mkdir(parents=True)
    sqlite_path.touch()  # an empty file is an empty database: no schema at all
    with pytest.raises(SchemaNotReady, match="0001_initial"):
        SqliteRepository(sqlite_path, create=False)

    created = SqliteRepository(sqlite_path, create=True)
    assert list(created.applied_migrations) == migration_files()
    created.close()
    connection = sqlite3.connect(sqlite_path, isolation_level=None)
    try:
        connection.execute("DELETE FROM schema_migrations WHERE version = 2")
    finally:
        connection.close()
    with pytest.raises(SchemaNotReady, match="0002_write_path"):
        SqliteRepository(sqlite_path, create=False)


def file_modes(path: Path) -> dict[str, int]:
    return {
        file.name: stat.S_IMODE(file.stat().st_mode)
        for file in path.parent.iterdir()
        if file.name.startswith(path.name)
    }


def test_sqlite_creates_a_private_database_file(sqlite_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        repo = SqliteRepository(sqlite_path)
        write_state(repo, "u", lambda s: s)
    finally:
        os.umask(previous)
    try:
        assert file_modes(sqlite_path) == {
            sqlite_path.name: 0o600,
            f"{sqlite_path.name}-wal": 0o600,
            f"{sqlite_path.name}-shm": 0o600,
        }
    finally:
        repo.close()


@pytest.mark.parametrize("operation", ["write_state", "apply"])
def test_sqlite_waits_for_a_lock_no_longer_than_the_call_budget(
    sqlite_path: Path, operation: str
) -> None:
    repo = SqliteRepository(sqlite_path)  # busy timeout: the default 5 s
    calls: list[AccountState] = []

    def write() -> object:
        if operation == "write_state":
            return write_state(repo, "u", lambda s: calls.append(s) or s)  # type: ignore[func-returns-value]
        return repo.apply("u", key("r1"), redeem("o1", calls), RECORDED)

    blocker = sqlite3.connect(sqlite_path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with within_store_deadline(0.3), pytest.raises(DeadlineExceeded):
            write()
        assert 0.25 < time.monotonic() - started < 0.3 + 0.3
        assert calls == []
        # A budget spent before the call: no waiting at all.
        with within_store_deadline(0.01):
            time.sleep(0.02)
            with pytest.raises(DeadlineExceeded):
                write()
        blocker.execute("ROLLBACK")
        with within_store_deadline(0.3):
            write()
        assert repo.load("u").account.version == 1
    finally:
        blocker.close()
        repo.close()


def test_sqlite_waits_for_a_lock_up_to_the_busy_timeout_without_a_budget(
    sqlite_path: Path,
) -> None:
    repo = SqliteRepository(sqlite_path, busy_timeout_ms=200)
    blocker = sqlite3.connect(sqlite_path, isolation_level=None, check_same_thread=False)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.1, lambda: blocker.execute("ROLLBACK"))
        release.start()
        assert write_state(repo, "u", lambda s: s).version == 1  # waited for the lock
        release.join()
        blocker.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="locked"):
            write_state(repo, "u", lambda s: s)
        assert 0.15 < time.monotonic() - started < 0.2 + 0.3
        with within_store_deadline(2.0), pytest.raises(StoreUnavailable):
            write_state(repo, "u", lambda s: s)  # the busy timeout is the longer wait's cap
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()
        repo.close()


def test_sqlite_deleted_database_is_unavailable_until_restored(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    try:
        write_state(repo, "kept", lambda s: dataclasses.replace(s, home_market="SE"))
        backup = sqlite_path.with_name("backup.db")
        with sqlite3.connect(sqlite_path) as source, sqlite3.connect(backup) as copy:
            source.backup(copy)
        for path in sqlite_path.parent.glob(f"{sqlite_path.name}*"):
            path.unlink()  # the connection still holds the unlinked file

        calls: list[AccountState] = []
        with pytest.raises(DatabaseNotFound):
            repo.apply("lost", key("r1"), redeem("o1", calls), RECORDED)
        with pytest.raises(DatabaseNotFound):
            repo.load("kept")
        with pytest.raises(DatabaseNotFound):
            repo.check()
        with pytest.raises(DatabaseNotFound):
            repo.check_writable()
        assert calls == []
        assert not sqlite_path.exists()  # not created again

        shutil.copyfile(backup, sqlite_path)  # restored: followed without reopening
        repo.check_writable()
        assert repo.load("kept").account.home_market == "SE"
        assert repo.apply("lost", key("r1"), redeem("o1"), RECORDED).version == 1
    finally:
        repo.close()


def test_sqlite_database_replaced_by_a_foreign_file_is_unavailable(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    try:
        write_state(repo, "u", lambda s: s)
        foreign = sqlite_path.with_name("foreign.db")
        sqlite3.connect(foreign).close()
        for path in sqlite_path.parent.glob(f"{sqlite_path.name}*"):
            path.unlink()
        foreign.rename(sqlite_path)
        with pytest.raises(StoreUnavailable, match="no such table"):
            repo.load("u")
        with pytest.raises(StoreUnavailable):
            write_state(repo, "u", lambda s: s)
    finally:
        repo.close()


def test_sqlite_corrupt_database_is_unavailable(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    try:
        for i in range(500):
            write_state(repo, f"user-{i:04d}", lambda s: dataclasses.replace(s, home_market="SE"))
        connection = sqlite3.connect(sqlite_path)
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.close()
        with sqlite_path.open("r+b") as file:  # every page but the first few: garbage
            file.seek(8 * 4096)
            file.write(b"\xff" * (sqlite_path.stat().st_size - 8 * 4096))
        failures = []
        for i in range(0, 500, 25):
            try:
                repo.load(f"user-{i:04d}")
            except StoreUnavailable as error:
                failures.append(str(error))
        assert failures
        assert all("malformed" in f or "not a database" in f for f in failures), failures
        with pytest.raises(StoreUnavailable):
            write_state(repo, "user-0000", lambda s: s)
    finally:
        repo.close()


def test_sqlite_check_writable(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    blocker = sqlite3.connect(sqlite_path, isolation_level=None)
    try:
        repo.check_writable()
        blocker.execute("BEGIN IMMEDIATE")
        repo.check_writable()  # the lock held elsewhere: contention, not a fault
        blocker.execute("ROLLBACK")
        with sqlite3.connect(sqlite_path) as reader:  # wrote nothing
            assert reader.execute("SELECT count(*) FROM users").fetchone() == (0,)
    finally:
        blocker.close()
        repo.close()
    with pytest.raises(StoreUnavailable):
        repo.check_writable()


def test_sqlite_close_while_calls_run_in_other_threads(sqlite_path: Path) -> None:
    """Closing the repository (a server stopping) while store threads still run
    statements on their connections - here writers that were waiting for the lock and get
    it just then: each connection is closed when its call ends, never under it (which
    crashed the process). A call ends done, or StoreUnavailable: the repository closed."""
    SqliteRepository(sqlite_path).close()
    blocker = sqlite3.connect(sqlite_path, isolation_level=None)
    try:
        for _ in range(10):
            repo = SqliteRepository(sqlite_path)
            outcomes: list[BaseException | None] = []

            def write(
                user_id: str,
                repo: SqliteRepository = repo,
                outcomes: list[BaseException | None] = outcomes,
            ) -> None:
                try:
                    repo.apply(user_id, key(user_id), redeem("o1"), RECORDED)
                    outcomes.append(None)
                except BaseException as error:
                    outcomes.append(error)

            blocker.execute("BEGIN IMMEDIATE")
            writers = [threading.Thread(target=write, args=(f"u{i}",)) for i in range(4)]
            for writer in writers:
                writer.start()
            time.sleep(0.05)  # the writers wait for the lock now
            blocker.execute("ROLLBACK")
            repo.close()
            for writer in writers:
                writer.join(timeout=10)
                assert not writer.is_alive()
            assert all(o is None or isinstance(o, StoreUnavailable) for o in outcomes), outcomes
    finally:
        blocker.close()
