"""What only the Spanner backend has, on the real emulator: migrations, the interleaved
schema, the schema check, bounded-staleness reads, transactions re-run after ABORTED, and
the CLI (migrate, seed-demo, history) against a spanner:// URL. The storage contract
itself runs on Spanner in tests/contract."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.cloud.spanner_v1 import KeySet
from google.cloud.spanner_v1.transaction import Transaction

from service.domain.account import AccountState, Redemption, Store
from service.domain.errors import StoreUnavailable
from storage.repository import HistoryDraft, IdempotencyKey, Mutation
from storage.spanner import DatabasePath, SchemaNotReady, SpannerRepository, migrate
from storage.spanner.client import database_handle
from storage.spanner.schema import MIGRATIONS_TABLE, migrations
from storage.urls import UnsupportedStorageUrl, open_repository
from tests.spanner_emulator import SpannerEmulator
from tests.state_writes import write_state
from tests.support.harness import ADMIN_TOKEN, write_test_credentials
from tests.support.processes import ENTITLEMENTS, await_serving

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ALL_MIGRATIONS = [m.name for m in migrations()]
PER_USER_TABLES = {
    "Subscriptions",
    "Grants",
    "Redemptions",
    "HouseholdMemberships",
    "ProcessedRequests",
    "History",
}


def query(emulator: SpannerEmulator, path: DatabasePath, sql: str) -> list[list[object]]:
    with database_handle(path, emulator.host).snapshot() as snapshot:
        return [list(row) for row in snapshot.execute_sql(sql)]


def grant(state: AccountState) -> Mutation:
    redemption = Redemption("o1", "g", T0, Store.WEB)
    return Mutation(
        dataclasses.replace(state, redemptions=(*state.redemptions, redemption)),
        {"ok": True},
        (HistoryDraft("grant", "g1", T0, "granted g1"),),
    )


def test_migrate_applies_each_migration_once_and_records_it(
    spanner_emulator: SpannerEmulator,
) -> None:
    path = spanner_emulator.create_database(migrated=False, prefix="migrate")
    assert migrate(path, endpoint=spanner_emulator.host) == ALL_MIGRATIONS
    recorded = query(spanner_emulator, path, f"SELECT Version, Name FROM {MIGRATIONS_TABLE}")
    assert sorted(recorded) == [[m.version, m.name] for m in migrations()]
    assert migrate(path, endpoint=spanner_emulator.host) == []
    again = query(spanner_emulator, path, f"SELECT Version, Name FROM {MIGRATIONS_TABLE}")
    assert sorted(again) == sorted(recorded)


def test_every_per_user_table_is_interleaved_in_users(spanner_emulator: SpannerEmulator) -> None:
    path = spanner_emulator.shared_database("schema")
    rows = query(
        spanner_emulator,
        path,
        "SELECT TABLE_NAME, PARENT_TABLE_NAME, ON_DELETE_ACTION FROM INFORMATION_SCHEMA.TABLES"
        " WHERE TABLE_SCHEMA = ''",
    )
    tables = {str(name): (parent, action) for name, parent, action in rows}
    assert tables["Users"] == (None, None)
    for table in PER_USER_TABLES:
        assert tables[table] == ("Users", "CASCADE"), table


def test_deleting_a_user_deletes_all_their_rows(spanner_emulator: SpannerEmulator) -> None:
    path = spanner_emulator.create_database("cascade")
    repo = SpannerRepository(path, endpoint=spanner_emulator.host)
    repo.apply("gone", IdempotencyKey("grant", "g1", "fp"), grant, T0)
    repo.apply("kept", IdempotencyKey("grant", "g1", "fp"), grant, T0)

    def delete(transaction: Transaction) -> None:
        transaction.delete("Users", KeySet(keys=[["gone"]]))

    database_handle(path, spanner_emulator.host).run_in_transaction(delete)
    for table in PER_USER_TABLES:
        users = query(spanner_emulator, path, f"SELECT DISTINCT UserId FROM {table}")
        assert users in ([], [["kept"]]), table
    assert repo.load("gone").account == AccountState.new("gone")
    assert repo.history("gone") == []
    assert repo.load("kept").account.version == 1


def test_repository_names_the_missing_migration_until_it_is_applied(
    spanner_emulator: SpannerEmulator,
) -> None:
    path = spanner_emulator.create_database(migrated=False, prefix="unmigrated")
    repo = SpannerRepository(path, endpoint=spanner_emulator.host)
    for call in (lambda: repo.load("u"), repo.check, lambda: write_state(repo, "u", lambda s: s)):
        with pytest.raises(SchemaNotReady, match=f"entitlements migrate --storage {path.url}"):
            call()
    migrate(path, endpoint=spanner_emulator.host)
    assert write_state(repo, "u", lambda s: s).version == 1  # the same repository, no restart
    repo.check()


def test_an_interrupted_migration_runs_again_harmlessly(spanner_emulator: SpannerEmulator) -> None:
    path = spanner_emulator.create_database("rerun")
    repo = SpannerRepository(path, endpoint=spanner_emulator.host)
    repo.apply("u", IdempotencyKey("grant", "g1", "fp"), grant, T0)

    # As if the last migration's DDL had run but the process died before recording it.
    def forget(transaction: Transaction) -> None:
        transaction.delete(MIGRATIONS_TABLE, KeySet(keys=[[migrations()[-1].version]]))

    database_handle(path, spanner_emulator.host).run_in_transaction(forget)
    with pytest.raises(SchemaNotReady, match=migrations()[-1].name):
        SpannerRepository(path, endpoint=spanner_emulator.host).check()
    assert migrate(path, endpoint=spanner_emulator.host) == [migrations()[-1].name]
    assert repo.load("u").account.version == 1
    assert [e.reference for e in repo.history("u")] == ["g1"]


def test_a_missing_database_is_unavailable_with_a_clear_message(
    spanner_emulator: SpannerEmulator,
) -> None:
    path = DatabasePath(spanner_emulator.project, spanner_emulator.instance, "never-created")
    repo = SpannerRepository(path, endpoint=spanner_emulator.host)
    with pytest.raises(StoreUnavailable, match="never-created not found: create it"):
        repo.load("u")


def test_opening_connects_to_nothing_and_urls_are_checked() -> None:
    # Nothing listens on port 1: construction must not connect (workers fork after it).
    repo = SpannerRepository("projects/p/instances/i/databases/d", endpoint="127.0.0.1:1")
    repo.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        repo.load("u")
    with pytest.raises(UnsupportedStorageUrl, match="spanner://projects/PROJECT"):
        open_repository("spanner://projects/p/databases/d")
    assert isinstance(
        open_repository("spanner://projects/p/instances/i/databases/d"), SpannerRepository
    )


def test_bounded_staleness_read_never_returns_less_than_min_version(
    spanner_emulator: SpannerEmulator,
) -> None:
    path = spanner_emulator.shared_database("stale")
    repo = SpannerRepository(path, endpoint=spanner_emulator.host, stale_read=timedelta(seconds=15))
    for expected in range(1, 4):
        written = write_state(repo, "u", lambda s: dataclasses.replace(s, home_market="SE"))
        assert written.version == expected
        loaded = repo.load("u", min_version=written.version)
        assert loaded.account == written


def concurrent_grants(repo: SpannerRepository, user: str, threads: int) -> int:
    """`threads` concurrent applies with distinct keys on one user; returns how many times
    their mutate functions ran."""
    calls: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(index: int) -> None:
        def mutate(state: AccountState) -> Mutation:
            with lock:
                calls.append(index)
            return grant(state)

        try:
            barrier.wait()
            repo.apply(user, IdempotencyKey("grant", f"g{index}", "fp"), mutate, T0)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert errors == []
    return len(calls)


def test_aborted_transactions_are_rerun_without_duplicates(
    spanner_emulator: SpannerEmulator,
) -> None:
    """Concurrent transactions on one user make the emulator abort some; each is re-run
    from scratch, and every write still lands exactly once."""
    path = spanner_emulator.shared_database("aborts")
    repo = SpannerRepository(path, endpoint=spanner_emulator.host)
    threads = 12
    for round_ in range(5):
        user = f"contended-{round_}"
        runs = concurrent_grants(repo, user, threads)
        assert [e.version for e in repo.history(user)] == list(range(1, threads + 1))
        assert len(repo.load(user).account.redemptions) == threads
        if runs > threads:
            return  # some transaction was re-run, and nothing was written twice
    pytest.fail("the emulator aborted no transaction in 5 rounds of 12 concurrent writes")


@pytest.mark.subprocess
def test_cli_migrates_seeds_and_reads_history(
    spanner_emulator: SpannerEmulator, tmp_path: Path
) -> None:
    # Neither the instance nor the database exists: against an emulator, migrate makes them.
    path = DatabasePath(spanner_emulator.project, "cli-instance", "cli-db")
    env = spanner_emulator.child_env()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ENTITLEMENTS, *args, "--storage", path.url],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )

    unmigrated = run("seed-demo")
    assert unmigrated.returncode == 1
    assert f"run `entitlements migrate --storage {path.url}`" in unmigrated.stderr
    first = run("migrate")
    assert first.returncode == 0, first.stderr
    assert f"applied {', '.join(ALL_MIGRATIONS)}" in first.stdout
    second = run("migrate")
    assert second.returncode == 0, second.stderr
    assert "nothing to apply" in second.stdout
    seeded = run("seed-demo")
    assert seeded.returncode == 0, seeded.stderr
    assert "demo-trial" in seeded.stdout
    repo = SpannerRepository(path, endpoint=spanner_emulator.host)
    assert repo.load("demo-trial").account.subscriptions
    # Support tooling reads what the server reads: `history` asks a server on the emulator.
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    server = subprocess.Popen(
        [ENTITLEMENTS, "serve", "--port", "0", "--workers", "1", "--storage", path.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, "ENTITLEMENTS_CREDENTIALS_FILE": str(credentials), "PYTHONUNBUFFERED": "1"},
    )
    try:
        target, _, drain = await_serving(server)
        history = subprocess.run(
            [ENTITLEMENTS, "history", "demo-trial", "--target", target,
             "--credential", ADMIN_TOKEN],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )  # fmt: skip
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    drain.join(timeout=5)
    assert history.returncode == 0, history.stderr
    assert "history of demo-trial (version 1)" in history.stdout
