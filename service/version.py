"""The versions, computed once: the server's and the API's.

`SERVER_VERSION` is the server's (and the CLI's) version; its one source is `version` in
pyproject.toml, read from the installed distribution's metadata ("0+unknown" when run from
a tree never installed). `API_VERSION` is the version of the API in protos/
(`API_PACKAGE`), the one CHANGELOG.md and the stubs package (clients/python/pyproject.toml)
carry; tests/test_versions.py keeps the three equal. `service.__version__` and
`service.API_VERSION` name the same values."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "entitlement-offer-service"
API_PACKAGE = "entitlements.v1"
API_VERSION = "1.1.0.dev0"


def _installed_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"


SERVER_VERSION = _installed_version()
