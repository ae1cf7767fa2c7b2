"""Store accounts linked to users (storage.account_links) behave alike on every backend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from storage.account_links import AccountLinks
from storage.memory.account_links import MemoryAccountLinks
from storage.spanner.account_links import SpannerAccountLinks
from storage.sqlite import SqliteRepository
from storage.urls import open_account_links
from tests.spanner_emulator import SpannerEmulator

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", "spanner"])
def links(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AccountLinks]:
    store: AccountLinks
    if request.param == "memory":
        store = MemoryAccountLinks()
    elif request.param == "sqlite":
        db = tmp_path / "accounts.sqlite3"
        SqliteRepository(db, create=True).close()  # migrates (0007: store_accounts)
        store = open_account_links(f"sqlite:///{db}")
    else:
        emulator: SpannerEmulator = request.getfixturevalue("spanner_emulator")
        path = emulator.shared_database("contract")
        store = SpannerAccountLinks(path.url, endpoint=emulator.host)
    try:
        yield store
    finally:
        store.close()


def test_a_link_names_the_user_and_a_later_link_replaces_it(
    links: AccountLinks, request: pytest.FixtureRequest
) -> None:
    account = f"cus_{request.node.callspec.id}_{datetime.now(UTC).timestamp()}"
    assert links.user_for("stripe", account) is None
    links.link("stripe", account, "u-1", T0)
    assert links.user_for("stripe", account) == "u-1"
    assert links.user_for("app_store", account) is None  # per store
    links.link("stripe", account, "u-2", T0)
    assert links.user_for("stripe", account) == "u-2"
