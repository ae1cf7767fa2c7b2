"""The storage contract: every backend in conftest.BACKENDS must pass these unchanged.

Tests at the end (marked "sqlite only") cover what only a persistent backend has:
reopening, migrations, several repositories on one file, kill -9, lock errors.
"""

from __future__ import annotations

import dataclasses
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.domain.account import (
    AccountState,
    Grant,
    GrantKind,
    Household,
    HouseholdMembership,
    HouseholdRole,
    Redemption,
    Store,
    Subscription,
    SubscriptionStatus,
    UserState,
)
from storage.repository import AccountChange, AccountRepository, StoreUnavailable
from storage.sqlite import SqliteRepository

T0 = datetime(2024, 1, 15, 9, 30, tzinfo=UTC)


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def sub(
    subscription_id: str,
    status: SubscriptionStatus = SubscriptionStatus.ACTIVE,
    store: Store = Store.WEB,
    plan_id: str = "premium_individual",
) -> Subscription:
    return Subscription(
        subscription_id=subscription_id,
        plan_id=plan_id,
        status=status,
        store=store,
        started_at=at(-30),
        current_period_end=at(30),
    )


RICH = AccountState(
    user_id="rich-user",
    version=0,
    home_market="SE",
    subscriptions=(
        Subscription(
            subscription_id="sub-grace",
            plan_id="premium_family",
            status=SubscriptionStatus.IN_GRACE_PERIOD,
            store=Store.GOOGLE_PLAY,
            started_at=at(-400),
            current_period_end=at(-1),
            grace_period_end=at(15),
            auto_renew=True,
            last_event_at=at(-1) + timedelta(microseconds=123456),
            offer_id="winback_3m",
        ),
        Subscription(
            subscription_id="sub-canceled",
            plan_id="premium_individual",
            status=SubscriptionStatus.CANCELED,
            store=Store.APP_STORE,
            started_at=at(-60),
            current_period_end=at(5),
            auto_renew=False,
        ),
        sub("sub-expired", SubscriptionStatus.EXPIRED, Store.PARTNER, "premium_duo"),
        sub("sub-trial", SubscriptionStatus.TRIALING, Store.WEB),
        sub("sub-hold", SubscriptionStatus.ON_HOLD, Store.GOOGLE_PLAY),
        sub("sub-paused", SubscriptionStatus.PAUSED, Store.GOOGLE_PLAY),
        sub("sub-revoked", SubscriptionStatus.REVOKED, Store.APP_STORE),
    ),
    grants=(
        Grant(
            grant_id="g-feature",
            kind=GrantKind.PROMOTIONAL,
            starts_at=at(-10),
            feature_id="offline_downloads",
            quota_value=30,
            expires_at=at(20),
        ),
        Grant(
            grant_id="g-plan-open-ended",
            kind=GrantKind.PARTNER,
            starts_at=at(-5),
            plan_id="premium_individual",
        ),
        Grant(
            grant_id="g-revoked",
            kind=GrantKind.SUPPORT,
            starts_at=at(-3),
            feature_id="lossless_audio",
            expires_at=at(27),
            revoked_at=at(-1),
        ),
    ),
    redemptions=(
        Redemption("trial_1m", "intro", at(-400), Store.WEB),
        Redemption("winback_3m", "winback", at(-2), Store.GOOGLE_PLAY),
        # The same offer twice: redemptions are a history, not a set.
        Redemption("trial_1m", "intro", at(-300), Store.APP_STORE),
    ),
    memberships=(
        HouseholdMembership("hh-old", HouseholdRole.MEMBER, "mgr-old", at(-300), at(-100)),
        HouseholdMembership("hh-own", HouseholdRole.MANAGER, "rich-user", at(-50)),
    ),
    student_verified_until=at(200),
)


def set_state(state: AccountState) -> AccountState:
    """A change that ignores the current state and writes `state`."""
    return state


# -- versions and basic reads/writes ------------------------------------------------------


def test_unknown_user_loads_as_version_zero_free_state(repository: AccountRepository) -> None:
    assert repository.load("nobody") == UserState(AccountState.new("nobody"), None)
    assert repository.load("nobody").account.version == 0


def test_check_passes_on_a_healthy_store(repository: AccountRepository) -> None:
    repository.check()


def test_update_bumps_version_by_exactly_one(repository: AccountRepository) -> None:
    for expected in range(1, 4):
        stored = repository.update(
            "u1", lambda s: dataclasses.replace(s, home_market=f"M{s.version}")
        )
        assert stored.version == expected
        assert stored.home_market == f"M{expected - 1}"
        assert repository.load("u1").account == stored
    assert repository.load("u1").account.version == 3


def test_change_receives_current_stored_state(repository: AccountRepository) -> None:
    first = repository.update("u1", lambda s: dataclasses.replace(s, home_market="DE"))
    seen: list[AccountState] = []

    def change(state: AccountState) -> AccountState:
        seen.append(state)
        return state

    repository.update("u1", change)
    assert seen[-1] == first


def test_update_ignores_version_and_user_id_returned_by_change(
    repository: AccountRepository,
) -> None:
    repository.update("u1", lambda s: s)
    stored = repository.update(
        "u1", lambda s: dataclasses.replace(s, user_id="someone-else", version=99)
    )
    assert stored.user_id == "u1"
    assert stored.version == 2
    assert repository.load("u1").account == stored
    assert repository.load("someone-else").account == AccountState.new("someone-else")


def test_users_are_independent(repository: AccountRepository) -> None:
    repository.update("a", lambda s: dataclasses.replace(s, home_market="SE"))
    repository.update("a", lambda s: s)
    repository.update("b", lambda s: dataclasses.replace(s, home_market="US"))
    assert repository.load("a").account == AccountState("a", version=2, home_market="SE")
    assert repository.load("b").account == AccountState("b", version=1, home_market="US")


# -- round trips ---------------------------------------------------------------------------


def test_rich_state_round_trips(repository: AccountRepository) -> None:
    stored = repository.update(RICH.user_id, lambda _: RICH)
    expected = dataclasses.replace(RICH, version=1)
    assert stored == expected
    assert repository.load(RICH.user_id).account == expected


def test_update_replaces_collections_and_clears_fields(repository: AccountRepository) -> None:
    repository.update(RICH.user_id, lambda _: RICH)
    smaller = dataclasses.replace(
        RICH,
        home_market=None,
        student_verified_until=None,
        subscriptions=(RICH.subscriptions[3], RICH.subscriptions[0]),  # reordered, fewer
        grants=RICH.grants[2:],
        redemptions=(),
        memberships=(),
    )
    repository.update(RICH.user_id, lambda _: smaller)
    assert repository.load(RICH.user_id).account == dataclasses.replace(smaller, version=2)


def test_timestamps_are_aware_and_keep_their_instant(repository: AccountRepository) -> None:
    stockholm_summer = timezone(timedelta(hours=2))
    local = datetime(2024, 6, 1, 12, 0, 0, 500, tzinfo=stockholm_summer)
    state = dataclasses.replace(AccountState.new("tz"), student_verified_until=local)
    repository.update("tz", lambda _: state)
    loaded = repository.load("tz").account.student_verified_until
    assert loaded == local
    assert loaded is not None and loaded.utcoffset() is not None
    assert loaded.astimezone(UTC) == datetime(2024, 6, 1, 10, 0, 0, 500, tzinfo=UTC)


_ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
_opt_ids = st.none() | _ids
_zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=_zones
)
_opt_times = st.none() | _times

_subscriptions = st.builds(
    Subscription,
    subscription_id=_ids,
    plan_id=_ids,
    status=st.sampled_from(SubscriptionStatus),
    store=st.sampled_from(Store),
    started_at=_times,
    current_period_end=_times,
    grace_period_end=_opt_times,
    auto_renew=st.booleans(),
    last_event_at=_opt_times,
    offer_id=_opt_ids,
)


@st.composite
def _grants(draw: st.DrawFn) -> Grant:
    target = draw(_ids)
    is_feature = draw(st.booleans())
    return Grant(
        grant_id=draw(_ids),
        kind=draw(st.sampled_from(GrantKind)),
        starts_at=draw(_times),
        feature_id=target if is_feature else None,
        plan_id=None if is_feature else target,
        quota_value=draw(st.none() | st.integers(-(2**63), 2**63 - 1)),
        expires_at=draw(_opt_times),
        revoked_at=draw(_opt_times),
    )


_states = st.builds(
    AccountState,
    user_id=st.just("prop-user"),
    version=st.integers(0, 1000),  # ignored by update
    home_market=_opt_ids,
    subscriptions=st.lists(_subscriptions, max_size=4, unique_by=lambda s: s.subscription_id).map(
        tuple
    ),
    grants=st.lists(_grants(), max_size=4, unique_by=lambda g: g.grant_id).map(tuple),
    redemptions=st.lists(
        st.builds(Redemption, _ids, _ids, _times, st.sampled_from(Store)), max_size=4
    ).map(tuple),
    memberships=st.lists(
        st.builds(
            HouseholdMembership, _ids, st.sampled_from(HouseholdRole), _ids, _times, _opt_times
        ),
        max_size=3,
    ).map(tuple),
    student_verified_until=_opt_times,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(state=_states)
def test_any_state_round_trips(repository: AccountRepository, state: AccountState) -> None:
    stored = repository.update("prop-user", lambda _: state)
    assert stored == dataclasses.replace(state, version=stored.version)
    assert repository.load("prop-user").account == stored


# -- failed changes ------------------------------------------------------------------------


class ChangeFailed(Exception):
    pass


def test_exception_in_change_leaves_state_unchanged_and_propagates(
    repository: AccountRepository,
) -> None:
    before = repository.update(RICH.user_id, lambda _: RICH)
    error = ChangeFailed("nope")

    def failing(state: AccountState) -> AccountState:
        raise error

    with pytest.raises(ChangeFailed) as raised:
        repository.update(RICH.user_id, failing)
    assert raised.value is error
    assert repository.load(RICH.user_id).account == before
    # The next successful update continues from the last stored version.
    assert repository.update(RICH.user_id, lambda s: s).version == 2


def test_exception_in_change_for_unknown_user_stores_nothing(
    repository: AccountRepository,
) -> None:
    def failing(state: AccountState) -> AccountState:
        raise ChangeFailed

    with pytest.raises(ChangeFailed):
        repository.update("ghost", failing)
    assert repository.load("ghost").account == AccountState.new("ghost")
    assert repository.update("ghost", lambda s: s).version == 1


# -- households ----------------------------------------------------------------------------


MANAGER_SUBS = (
    sub("mgr-family", SubscriptionStatus.ACTIVE, Store.APP_STORE, "premium_family"),
    sub("mgr-old", SubscriptionStatus.EXPIRED, Store.WEB, "premium_individual"),
)


def member_of(household_id: str, manager: str, left_at: datetime | None = None) -> AccountChange:
    membership = HouseholdMembership(household_id, HouseholdRole.MEMBER, manager, at(-20), left_at)

    def change(state: AccountState) -> AccountState:
        return dataclasses.replace(state, memberships=(*state.memberships, membership))

    return change


def setup_household(repository: AccountRepository) -> None:
    manager = HouseholdMembership("hh-1", HouseholdRole.MANAGER, "manager", at(-30))
    repository.update(
        "manager",
        lambda s: dataclasses.replace(s, subscriptions=MANAGER_SUBS, memberships=(manager,)),
    )


def test_active_member_gets_household_with_managers_current_subscriptions(
    repository: AccountRepository,
) -> None:
    setup_household(repository)
    repository.update("member", member_of("hh-1", "manager"))
    assert repository.load("member").household == Household("hh-1", "manager", MANAGER_SUBS)

    # The manager's subscriptions as they are now, not as they were when the member joined.
    renewed = (dataclasses.replace(MANAGER_SUBS[0], current_period_end=at(60)),)
    repository.update("manager", lambda s: dataclasses.replace(s, subscriptions=renewed))
    assert repository.load("member").household == Household("hh-1", "manager", renewed)


def test_member_who_left_has_no_household(repository: AccountRepository) -> None:
    setup_household(repository)
    repository.update("former", member_of("hh-1", "manager", left_at=at(-1)))
    assert repository.load("former").household is None


def test_first_current_membership_decides_the_household(repository: AccountRepository) -> None:
    setup_household(repository)
    repository.update("mover", member_of("hh-0", "old-manager", left_at=at(-10)))
    repository.update("mover", member_of("hh-1", "manager"))
    assert repository.load("mover").household == Household("hh-1", "manager", MANAGER_SUBS)


def test_manager_has_no_household(repository: AccountRepository) -> None:
    setup_household(repository)
    assert repository.load("manager").household is None


def test_member_of_unknown_manager_gets_household_without_subscriptions(
    repository: AccountRepository,
) -> None:
    repository.update("orphan", member_of("hh-9", "never-seen"))
    assert repository.load("orphan").household == Household("hh-9", "never-seen", ())


# -- concurrency ---------------------------------------------------------------------------


def append_redemption(offer_id: str) -> AccountChange:
    redemption = Redemption(offer_id, "concurrency", T0, Store.WEB)

    def change(state: AccountState) -> AccountState:
        return dataclasses.replace(state, redemptions=(*state.redemptions, redemption))

    return change


def run_threads(workers: list[threading.Thread]) -> None:
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
        assert not worker.is_alive()


def test_concurrent_updates_lose_nothing(repository: AccountRepository) -> None:
    threads, per_thread = 8, 15
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                repository.update("counter", append_redemption(f"t{thread}-{i}"))
                repository.load("counter")
        except BaseException as exc:
            errors.append(exc)

    run_threads([threading.Thread(target=work, args=(t,)) for t in range(threads)])
    assert errors == []
    account = repository.load("counter").account
    assert account.version == threads * per_thread
    offers = [r.offer_id for r in account.redemptions]
    assert sorted(offers) == sorted(f"t{t}-{i}" for t in range(threads) for i in range(per_thread))
    for t in range(threads):  # each thread's updates are applied in its order
        mine = [o for o in offers if o.startswith(f"t{t}-")]
        assert mine == [f"t{t}-{i}" for i in range(per_thread)]


# -- sqlite only ---------------------------------------------------------------------------


def migration_rows(path: Path) -> list[tuple[int, str]]:
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        return [(int(v), str(n)) for v, n in rows]
    finally:
        connection.close()


def migration_files() -> list[str]:
    directory = Path(sys.modules[SqliteRepository.__module__].__file__ or "").parent
    return sorted(p.stem for p in (directory / "migrations").glob("*.sql"))


def test_sqlite_state_survives_close_and_reopen(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    repo.update(RICH.user_id, lambda _: RICH)
    repo.close()
    with pytest.raises(StoreUnavailable):
        repo.load(RICH.user_id)

    reopened = SqliteRepository(sqlite_path)
    try:
        assert reopened.load(RICH.user_id).account == dataclasses.replace(RICH, version=1)
        assert reopened.update(RICH.user_id, lambda s: s).version == 2
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
        repos[0].update("u", lambda s: dataclasses.replace(s, home_market="NO"))
        assert all(r.load("u").account.home_market == "NO" for r in repos)
    finally:
        for repo in repos:
            repo.close()


_OPEN_AND_UPDATE_SCRIPT = """
import sys
from storage.sqlite import SqliteRepository
sys.stdin.read()  # wait until every process is started
repo = SqliteRepository(sys.argv[1])
repo.update("u", lambda s: s)
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
        one.update("shared", append_redemption("from-one"))
        assert [r.offer_id for r in two.load("shared").account.redemptions] == ["from-one"]
        two.update("shared", append_redemption("from-two"))
        account = one.load("shared").account
        assert account.version == 2
        assert [r.offer_id for r in account.redemptions] == ["from-one", "from-two"]

        # Both writing at once, as two processes would.
        errors: list[BaseException] = []

        def work(repo: SqliteRepository, name: str) -> None:
            try:
                for i in range(10):
                    repo.update("shared", append_redemption(f"{name}-{i}"))
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
repo = SqliteRepository(sys.argv[1])
stored = repo.update("durable", lambda s: dataclasses.replace(s, home_market="FI"))
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
    repo.update("u", lambda s: dataclasses.replace(s, home_market="SE"))
    blocker = sqlite3.connect(sqlite_path, isolation_level=None)
    calls: list[AccountState] = []

    def change(state: AccountState) -> AccountState:
        calls.append(state)
        return state

    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable):
            repo.update("u", change)
        assert calls == []
        # WAL: readers are not blocked by a writer.
        assert repo.load("u").account.version == 1
        blocker.execute("ROLLBACK")
        assert repo.update("u", change).version == 2
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


def test_sqlite_rejects_naive_timestamps(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    try:
        naive = dataclasses.replace(
            AccountState.new("u"), student_verified_until=datetime(2024, 1, 1)
        )
        with pytest.raises(ValueError, match="naive"):
            repo.update("u", lambda _: naive)
        assert repo.load("u").account == AccountState.new("u")
    finally:
        repo.close()


def test_sqlite_stores_utc_iso_text(sqlite_path: Path) -> None:
    repo = SqliteRepository(sqlite_path)
    try:
        plus_two = datetime(2024, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
        repo.update("u", lambda s: dataclasses.replace(s, student_verified_until=plus_two))
    finally:
        repo.close()
    connection = sqlite3.connect(sqlite_path)
    try:
        row = connection.execute("SELECT student_verified_until FROM users").fetchone()
    finally:
        connection.close()
    assert row == ("2024-06-01T10:00:00.000000+00:00",)
