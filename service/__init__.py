"""The entitlement and offer service.

`__version__` is the server's version; its one source is `version` in pyproject.toml (read
from the installed distribution's metadata). `API_VERSION` is the version of the API in
protos/ (entitlements.v1), the one CHANGELOG.md and the stubs package
(clients/python/pyproject.toml) carry; tests/test_versions.py keeps the three equal."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "entitlement-offer-service"
API_VERSION = "1.1.0.dev0"


def server_version() -> str:
    """The installed server's version, or "0+unknown" when run from a tree never installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"


__version__ = server_version()
