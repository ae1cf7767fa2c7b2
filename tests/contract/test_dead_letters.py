"""The dead-letter stores (storage.dead_letters) behave alike on every backend: one letter
per delivery, redeliveries counted, resolved by a replay, opened again by a new failure."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage.dead_letters import DeadLetter, DeadLetterStore
from storage.memory.dead_letters import MemoryDeadLetters
from storage.spanner.dead_letters import SpannerDeadLetters
from storage.sqlite import SqliteRepository
from storage.urls import open_dead_letters
from tests.spanner_emulator import SpannerEmulator

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", "spanner"])
def letters(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DeadLetterStore]:
    store: DeadLetterStore
    if request.param == "memory":
        store = MemoryDeadLetters()
    elif request.param == "sqlite":
        db = tmp_path / "accounts.sqlite3"
        SqliteRepository(db, create=True).close()  # migrates (0005: dead_letters)
        store = open_dead_letters(f"sqlite:///{db}")
    else:
        emulator: SpannerEmulator = request.getfixturevalue("spanner_emulator")
        path = emulator.shared_database("contract")
        emulator.clear(path)
        store = SpannerDeadLetters(path.url, endpoint=emulator.host)
        for letter in store.list(include_resolved=True, limit=1000):  # not cleared by clear()
            store.resolve(letter.source, letter.delivery_id, T0)
        store = _Fresh(store)
    try:
        yield store
    finally:
        store.close()


class _Fresh:
    """The shared Spanner database keeps earlier tests' letters: this view shows only the
    letters received from T0 on, which each test writes anew under unique ids."""

    def __init__(self, inner: SpannerDeadLetters) -> None:
        self._inner = inner
        self._prefix = f"t{datetime.now(UTC).timestamp()}-"

    def _id(self, delivery_id: str) -> str:
        return self._prefix + delivery_id

    def keep(self, letter: DeadLetter) -> None:
        from dataclasses import replace

        self._inner.keep(replace(letter, delivery_id=self._id(letter.delivery_id)))

    def list(self, *, include_resolved: bool = False, limit: int = 100) -> list[DeadLetter]:
        from dataclasses import replace

        return [
            replace(x, delivery_id=x.delivery_id.removeprefix(self._prefix))
            for x in self._inner.list(include_resolved=include_resolved, limit=10_000)
            if x.delivery_id.startswith(self._prefix)
        ][:limit]

    def get(self, source: str, delivery_id: str) -> DeadLetter | None:
        from dataclasses import replace

        found = self._inner.get(source, self._id(delivery_id))
        return None if found is None else replace(found, delivery_id=delivery_id)

    def resolve(self, source: str, delivery_id: str, at: datetime) -> bool:
        return self._inner.resolve(source, self._id(delivery_id), at)

    def open_count(self) -> int:
        return len(self.list(limit=10_000))

    def close(self) -> None:
        self._inner.close()


def letter(delivery_id: str, reason: str = "no_user", at: datetime = T0) -> DeadLetter:
    return DeadLetter("stripe", delivery_id, f'{{"id": "{delivery_id}"}}', reason, "why", at)


def test_one_letter_per_delivery_and_redeliveries_are_counted(letters: DeadLetterStore) -> None:
    letters.keep(letter("evt_1"))
    letters.keep(letter("evt_2", "unknown_product", T0 + timedelta(seconds=1)))
    letters.keep(letter("evt_1", "unknown_product", T0 + timedelta(seconds=2)))
    listed = letters.list()
    assert [(x.delivery_id, x.reason, x.attempts) for x in listed] == [
        ("evt_1", "unknown_product", 2),
        ("evt_2", "unknown_product", 1),
    ]
    assert listed[0].received_at == T0  # when it first arrived
    assert letters.open_count() == 2


def test_resolved_letters_leave_the_open_list_and_a_new_failure_reopens(
    letters: DeadLetterStore,
) -> None:
    letters.keep(letter("evt_1"))
    assert letters.resolve("stripe", "evt_1", T0 + timedelta(hours=1))
    assert not letters.resolve("stripe", "evt_1", T0 + timedelta(hours=2))
    assert not letters.resolve("stripe", "evt_unknown", T0)
    assert letters.list() == []
    (resolved,) = letters.list(include_resolved=True)
    assert resolved.resolved_at == T0 + timedelta(hours=1)
    letters.keep(letter("evt_1"))
    found = letters.get("stripe", "evt_1")
    assert found is not None
    assert found.resolved_at is None
    assert found.attempts == 2
