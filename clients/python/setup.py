"""Gathers the package before setuptools builds it: src/entitlements/ (git-ignored) becomes
a fresh copy of the repository's generated/entitlements/ (`make generate` writes it from
protos/), with the service config (../service_config.json) and the files of overlay/
(py.typed, the service_config helper). Built from an sdist, where the repository is not
around, the copy inside the sdist is used as it is."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
GENERATED = HERE.parent.parent / "generated" / "entitlements"
SERVICE_CONFIG = HERE.parent / "service_config.json"
PACKAGE = HERE / "src" / "entitlements"


def gather() -> None:
    if not GENERATED.is_dir():
        if not PACKAGE.is_dir():
            raise SystemExit(f"neither {GENERATED} nor {PACKAGE}: build from the repository")
        return
    shutil.rmtree(PACKAGE, ignore_errors=True)
    shutil.copytree(GENERATED, PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(SERVICE_CONFIG, PACKAGE / "service_config.json")
    shutil.copytree(HERE / "overlay" / "entitlements", PACKAGE, dirs_exist_ok=True)


gather()
setup()
