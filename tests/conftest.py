"""Fixtures shared by every test folder: the Cloud Spanner emulator (tests/spanner_emulator.py)
and the in-process real server `harness` (tests/support/harness.py).

Every test that needs the emulator is marked `spanner` here, from the fixtures it uses
(spanner_emulator, private_spanner_emulator) or the backend it is parametrized with
(a "spanner" parameter of a fixture such as `harness` or `repository`, which takes the
emulator through request.getfixturevalue)."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.spanner_emulator", "tests.support.harness"]

EMULATOR_FIXTURES = frozenset({"spanner_emulator", "private_spanner_emulator"})


def needs_spanner(item: pytest.Item) -> bool:
    if EMULATOR_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "spanner" in callspec.params.values()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if needs_spanner(item):
            item.add_marker(pytest.mark.spanner)
