"""One version for the server, one for the API, each said the same wherever it appears."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import service

ROOT = Path(__file__).resolve().parent.parent


def project_version(pyproject: Path) -> str:
    version = tomllib.loads(pyproject.read_text())["project"]["version"]
    assert isinstance(version, str)
    return version


def test_the_server_version_is_the_project_version() -> None:
    assert service.__version__ == project_version(ROOT / "pyproject.toml")


def test_the_stubs_package_carries_the_api_version() -> None:
    assert project_version(ROOT / "clients" / "python" / "pyproject.toml") == service.API_VERSION


def test_the_changelog_leads_with_the_api_version() -> None:
    """`## X.Y.Z (unreleased)` goes with X.Y.Z.dev0; a released `## X.Y.Z (date)` with X.Y.Z."""
    heading = re.search(
        r"^## (\d+\.\d+\.\d+)( \(unreleased\)| \(\d{4}-\d{2}-\d{2}\))?$",
        (ROOT / "CHANGELOG.md").read_text(),
        re.M,
    )
    assert heading, "CHANGELOG.md has no '## X.Y.Z' heading"
    expected = heading.group(1) + (".dev0" if heading.group(2) else "")
    assert expected == service.API_VERSION
