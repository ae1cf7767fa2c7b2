"""Backends the contract suite runs against.

To add a backend, add a factory to BACKENDS: it gets the pytest request (for tmp_path or
any session fixture such as an emulator) and returns a fresh, empty repository.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storage.memory import MemoryRepository
from storage.repository import AccountRepository
from storage.sqlite import SqliteRepository

BackendFactory = Callable[[pytest.FixtureRequest], AccountRepository]


def _memory(request: pytest.FixtureRequest) -> AccountRepository:
    return MemoryRepository()


def _sqlite(request: pytest.FixtureRequest) -> AccountRepository:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    return SqliteRepository(tmp_path / "db" / "accounts.sqlite3")


BACKENDS: dict[str, BackendFactory] = {
    "memory": _memory,
    "sqlite": _sqlite,
}


@pytest.fixture(params=list(BACKENDS))
def repository(request: pytest.FixtureRequest) -> Iterator[AccountRepository]:
    repo = BACKENDS[request.param](request)
    try:
        yield repo
    finally:
        repo.close()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "sqlite" / "accounts.sqlite3"
