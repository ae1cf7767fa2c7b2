"""The application as service.bootstrap wires it, without a server: the change feed wakes
the watches (the link bootstrap makes), and one close() tears everything down."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.bootstrap import build_application
from service.config import Settings
from service.domain.account import GrantKind
from service.domain.errors import WatchClosed
from service.domain.grants import GrantRequest
from service.usecases.watch import WatchReason
from service.usecases.writes import GrantEntitlement
from storage.urls import open_repository

NOW = datetime.now(UTC)


def settings_for(path: Path) -> Settings:
    open_repository(f"sqlite:///{path}", create=True).close()  # as `entitlements migrate`
    return Settings(storage_url=f"sqlite:///{path}", feed_poll_seconds=0.05)


def test_a_write_of_another_process_wakes_a_watch_through_the_feed(tmp_path: Path) -> None:
    """Two applications over one SQLite file, as two workers: a grant through the second
    reaches a watch of the first only through the first's change feed."""
    watching = build_application(settings_for(tmp_path / "store.db"))
    writing = build_application(settings_for(tmp_path / "store.db"))
    assert watching.feed is not None
    grant = GrantRequest(
        kind=GrantKind.PROMOTIONAL,
        feature_id="offline_downloads",
        plan_id=None,
        quota_value=0,
        starts_at=None,
        expires_at=None,
        duration=timedelta(days=1),
    )

    async def scenario() -> list[WatchReason]:
        await watching.start_feed()
        updates = watching.watches.watch("u-feed", ["offline_downloads"])
        reasons = [(await anext(updates)).reason]
        await writing.writes.grants.grant(GrantEntitlement("req-1", "u-feed", grant))
        async with asyncio.timeout(30):
            update = await anext(updates)
        reasons.append(update.reason)
        assert update.decisions[0].granted
        watching.end_streams()
        with pytest.raises(WatchClosed):
            await anext(updates)
        await watching.stop_feed()
        return reasons

    try:
        assert asyncio.run(scenario()) == [WatchReason.INITIAL, WatchReason.WRITE]
    finally:
        watching.close()
        writing.close()


def test_close_releases_everything_once(tmp_path: Path) -> None:
    app = build_application(settings_for(tmp_path / "store.db"))
    assert app.observers.rpc is None
    assert app.observers.store is None
    app.close()
    app.close()  # a second close does nothing (the store is not closed twice)
    with pytest.raises(RuntimeError):  # the store pool is shut down
        asyncio.run(app.store_calls.run(1.0, lambda: None))
