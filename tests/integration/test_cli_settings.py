"""Every setting is a `serve` flag and in one generated reference (docs/SETTINGS.md), and
an unknown ENTITLEMENTS_* variable is reported at start: through the real console script."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from service.config import Settings, unknown_environment_variables
from tests.support.cli import run_cli, serve

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.subprocess
def test_settings_reference_is_up_to_date() -> None:
    generated = run_cli("settings-reference", cwd=REPO).stdout
    committed = (REPO / "docs" / "SETTINGS.md").read_text(encoding="utf-8")
    assert generated == committed, (
        "docs/SETTINGS.md is stale: run `.venv/bin/entitlements settings-reference > "
        "docs/SETTINGS.md`"
    )
    for field in dataclasses.fields(Settings):
        assert f"`ENTITLEMENTS_{field.name.upper()}`" in committed


@pytest.mark.subprocess
def test_every_setting_is_a_serve_flag(tmp_path: Path) -> None:
    text = run_cli("serve", "--help", cwd=tmp_path).stdout
    for field in dataclasses.fields(Settings):
        assert f"--{field.name.replace('_', '-')}" in text, field.name
    # The old short flags still work, and a flag reaches the settings (and wins over the
    # environment).
    assert "--storage-url TEXT, --storage TEXT" in text
    refused = run_cli(
        "serve", "--port", "0", "--storage", "memory://", "--threads", "0", cwd=tmp_path,
        check=False, env={"ENTITLEMENTS_THREADS": "4"},
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == "error: threads must be greater than 0, got 0"


@pytest.mark.subprocess
def test_an_unknown_environment_variable_is_reported_at_start(tmp_path: Path) -> None:
    server = serve(
        tmp_path, "--storage", "memory://", "--log-format", "text",
        env={"ENTITLEMENTS_CACHE_TTL_SECOND": "5"},
    )  # fmt: skip
    server.stop()
    warnings = [line for line in server.output if "WARNING" in line]
    assert any(
        "ENTITLEMENTS_CACHE_TTL_SECOND ignored; did you mean ENTITLEMENTS_CACHE_TTL_SECONDS?"
        in line
        for line in warnings
    ), server.text()


def test_unknown_environment_variables() -> None:
    environ = {
        "ENTITLEMENTS_THREADS": "4",  # a setting
        "ENTITLEMENTS_TARGET": "x",  # read by the CLI
        "ENTITLEMENTS_STORAGE_ULR": "memory://",
        "ENTITLEMENTS_ZZZ": "1",
        "PATH": "/bin",
    }
    assert unknown_environment_variables(environ) == [
        ("ENTITLEMENTS_STORAGE_ULR", "ENTITLEMENTS_STORAGE_URL"),
        ("ENTITLEMENTS_ZZZ", None),
    ]
