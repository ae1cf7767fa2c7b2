"""Fixtures shared by every test folder: the Cloud Spanner emulator (tests/spanner_emulator.py)."""

pytest_plugins = ["tests.spanner_emulator"]
