"""What only a persistent backend has, on SQLite: reopening, migrations, several
repositories and processes on one file, kill -9, lock errors.
"""

from __future__ import annotations

import dataclasses
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from service.domain.account import AccountState
from service.domain.errors import StoreUnavailable
from storage.sqlite import SqliteRepository
from tests.contract.builders import (
    RICH,
    append_redemption,
    migration_files,
    migration_rows,
    run_threads,
)
from tests.state_writes import write_state


def test_sqlite_state_survives_close_and_reopen(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    write_state(repo, RICH.user_id, lambda _: RICH)
    repo.close()
    with pytest.raises(StoreUnavailable):
        repo.load(RICH.user_id)

    reopened = SqliteRepository(sqlite_path)
    try:
        assert reopened.load(RICH.user_id).account == dataclasses.replace(RICH, version=1)
        assert write_state(reopened, RICH.user_id, lambda s: s).version == 2
    finally:
        reopened.close()


def test_sqlite_migrations_are_applied_once(sqlite_path: Path) -> None:
    SqliteRepository(sqlite_path).close()
    first = migration_rows(sqlite_path)
    assert [name for _, name in first] == migration_files()
    assert first[0] == (1, "0001_initial")

    for _ in range(2):
        SqliteRepository(sqlite_path).close()
    assert migration_rows(sqlite_path) == first


def test_sqlite_concurrent_openers_apply_each_migration_once(sqlite_path: Path) -> None:
    openers = 6
    barrier = threading.Barrier(openers)
    repos: list[SqliteRepository] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def open_repo() -> None:
        try:
            barrier.wait()
            repo = SqliteRepository(sqlite_path)
            with lock:
                repos.append(repo)
        except BaseException as exc:
            errors.append(exc)

    run_threads([threading.Thread(target=open_repo) for _ in range(openers)])
    try:
        assert errors == []
        assert [name for _, name in migration_rows(sqlite_path)] == migration_files()
        write_state(repos[0], "u", lambda s: dataclasses.replace(s, home_market="NO"))
        assert all(r.load("u").account.home_market == "NO" for r in repos)
    finally:
        for repo in repos:
            repo.close()


_OPEN_AND_UPDATE_SCRIPT = """
import sys
from storage.sqlite import SqliteRepository
from tests.state_writes import write_state
sys.stdin.read()  # wait until every process is started
repo = SqliteRepository(sys.argv[1])
write_state(repo, "u", lambda s: s)
repo.close()
"""


def test_sqlite_concurrent_processes_open_a_new_file(sqlite_path: Path) -> None:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_AND_UPDATE_SCRIPT, str(sqlite_path)],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    for process in processes:
        assert process.stdin is not None
        process.stdin.close()
    for process in processes:
        assert process.wait(timeout=60) == 0, process.stderr.read() if process.stderr else ""
        if process.stderr:
            process.stderr.close()
    assert [name for _, name in migration_rows(sqlite_path)] == migration_files()
    repo = SqliteRepository(sqlite_path)
    try:
        assert repo.load("u").account.version == len(processes)
    finally:
        repo.close()


def test_sqlite_waits_for_a_writer_before_switching_a_new_file_to_wal(
    sqlite_path: Path,
) -> None:
    # Another process holds the write lock while the file is still in rollback mode: the
    # switch to WAL fails at once without the busy handler and must be retried.
    sqlite_path.parent.mkdir(parents=True)
    blocker = sqlite3.connect(sqlite_path, isolation_level=None, check_same_thread=False)
    blocker.execute("CREATE TABLE unrelated (x INTEGER)")
    blocker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.1, lambda: blocker.execute("ROLLBACK"))
    release.start()
    try:
        repo = SqliteRepository(sqlite_path, busy_timeout_ms=3000)
        repo.close()
    finally:
        release.join()
        blocker.close()
    assert [name for _, name in migration_rows(sqlite_path)] == migration_files()


def test_sqlite_database_is_in_wal_mode(sqlite_path: Path) -> None:
    SqliteRepository(sqlite_path).close()
    connection = sqlite3.connect(sqlite_path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        connection.close()


def test_sqlite_two_repositories_on_one_file_see_each_others_writes(sqlite_path: Path) -> None:
    one, two = SqliteRepository(sqlite_path), SqliteRepository(sqlite_path)
    try:
        write_state(one, "shared", append_redemption("from-one"))
        assert [r.offer_id for r in two.load("shared").account.redemptions] == ["from-one"]
        write_state(two, "shared", append_redemption("from-two"))
        account = one.load("shared").account
        assert account.version == 2
        assert [r.offer_id for r in account.redemptions] == ["from-one", "from-two"]

        # Both writing at once, as two processes would.
        errors: list[BaseException] = []

        def work(repo: SqliteRepository, name: str) -> None:
            try:
                for i in range(10):
                    write_state(repo, "shared", append_redemption(f"{name}-{i}"))
            except BaseException as exc:
                errors.append(exc)

        run_threads(
            [
                threading.Thread(target=work, args=(one, "one")),
                threading.Thread(target=work, args=(two, "two")),
            ]
        )
        assert errors == []
        assert one.load("shared").account.version == 22
        assert len(two.load("shared").account.redemptions) == 22
    finally:
        one.close()
        two.close()


_KILL_SCRIPT = """
import dataclasses, os, signal, sys
from storage.sqlite import SqliteRepository
from tests.state_writes import write_state
repo = SqliteRepository(sys.argv[1])
stored = write_state(repo, "durable", lambda s: dataclasses.replace(s, home_market="FI"))
print(stored.version, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sqlite_acknowledged_write_survives_kill_9(sqlite_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, str(sqlite_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert result.stdout.strip() == "1"
    repo = SqliteRepository(sqlite_path)
    try:
        account = repo.load("durable").account
        assert (account.version, account.home_market) == (1, "FI")
    finally:
        repo.close()


def test_sqlite_locked_database_is_store_unavailable(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path, busy_timeout_ms=50)
    write_state(repo, "u", lambda s: dataclasses.replace(s, home_market="SE"))
    blocker = sqlite3.connect(sqlite_path, isolation_level=None)
    calls: list[AccountState] = []

    def change(state: AccountState) -> AccountState:
        calls.append(state)
        return state

    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable):
            write_state(repo, "u", change)
        assert calls == []
        # WAL: readers are not blocked by a writer.
        assert repo.load("u").account.version == 1
        blocker.execute("ROLLBACK")
        assert write_state(repo, "u", change).version == 2
    finally:
        blocker.close()
        repo.close()


def test_sqlite_unopenable_path_is_store_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        SqliteRepository(tmp_path)  # a directory, not a database file


def test_sqlite_check_fails_after_close(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    repo.check()
    repo.close()
    with pytest.raises(StoreUnavailable):
        repo.check()
