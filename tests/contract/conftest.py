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
from storage.spanner import SpannerRepository
from storage.sqlite import SqliteRepository
from tests.spanner_emulator import SpannerEmulator

BackendFactory = Callable[[pytest.FixtureRequest], AccountRepository]


def _memory(request: pytest.FixtureRequest) -> AccountRepository:
    return MemoryRepository()


def _sqlite(request: pytest.FixtureRequest) -> AccountRepository:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    return SqliteRepository(tmp_path / "db" / "accounts.sqlite3")


def _spanner(request: pytest.FixtureRequest) -> AccountRepository:
    # One database for the suite, emptied before each test (creating one per test would
    # work too, but costs a schema migration each).
    emulator: SpannerEmulator = request.getfixturevalue("spanner_emulator")
    path = emulator.shared_database("contract")
    emulator.clear(path)
    # A busy machine (CI shares it): eight threads contending for one user on an emulator
    # that serialises transactions can take longer than the default 10 s per call.
    return SpannerRepository(path, endpoint=emulator.host, default_timeout=30.0)


BACKENDS: dict[str, BackendFactory] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "spanner": _spanner,
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
