"""The client library (clients/python/client, `entitlements-client`) as client teams get
it: installed with the stubs package (clients/python) into a fresh virtual environment
without the server, it calls a real server, with its near cache, from a script there.
Its copy of the service config is the repository's.

Like tests/test_stubs_package.py, the fresh environment takes grpcio and protobuf from the
configured package index or pip's cache; without an index the test skips with the reason,
except in CI (CI=true), where it fails."""

from __future__ import annotations

import json
import os
import shutil
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.config import Settings
from service.grpc_api.auth import Role, credentials_yaml
from service.grpc_api.server import start_server
from storage.sqlite import SqliteRepository
from tests.support.packaging import OFFLINE_SIGNS, ROOT, run

CLIENT_PROJECT = ROOT / "clients" / "python" / "client"
SERVICE_TOKEN = "client-package-service-token-0123456789"
ADMIN_TOKEN = "client-package-admin-token-0123456789"

pytestmark = pytest.mark.timeout(300)


def test_the_client_ships_the_repositorys_service_config() -> None:
    shipped = CLIENT_PROJECT / "src" / "entitlements_client" / "service_config.json"
    assert shipped.read_text() == (ROOT / "clients" / "service_config.json").read_text(), (
        "cp clients/service_config.json clients/python/client/src/entitlements_client/"
    )


@pytest.fixture(scope="module")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("client-venv")
    source = folder / "repo"
    ignore = shutil.ignore_patterns("src", "build", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT / "clients" / "python", source / "clients" / "python", ignore=ignore)
    shutil.copytree(
        CLIENT_PROJECT / "src",
        source / "clients" / "python" / "client" / "src",
        ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"),
    )
    shutil.copy(ROOT / "clients" / "service_config.json", source / "clients")
    shutil.copytree(ROOT / "generated", source / "generated")
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(folder / "venv")
    python = folder / "venv" / "bin" / "python"
    stubs = source / "clients" / "python"
    installed = run(python, "-m", "pip", "install", "--quiet", stubs, stubs / "client", cwd=folder)
    if installed.returncode != 0:
        output = installed.stdout + installed.stderr
        if os.environ.get("CI") != "true" and any(sign in output for sign in OFFLINE_SIGNS):
            pytest.skip(f"no package index to install grpcio and protobuf from:\n{output}")
        pytest.fail(f"pip install clients/python/client failed:\n{output}")
    return python


@pytest.fixture(scope="module")
def server_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("client-server")
    credentials = folder / "credentials.yaml"
    credentials.write_text(
        credentials_yaml(
            [("client", Role.SERVICE, SERVICE_TOKEN), ("writer", Role.ADMIN, ADMIN_TOKEN)]
        )
    )
    db = folder / "entitlements.db"
    settings = Settings(
        host="127.0.0.1", port=0, storage_url=f"sqlite:///{db}", credentials_file=credentials
    )
    running = start_server(settings, repository=SqliteRepository(db))
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        running.stop(grace_seconds=1)


SCRIPT = """\
import json, sys, time

from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements_client import EntitlementsClient

target, token, admin = sys.argv[1:4]
with EntitlementsClient(target, credential=token, near_cache=True, read_timeout=30) as client:
    began = time.monotonic()
    while not client.cache.stream_fresh:
        assert time.monotonic() - began < 30, "the change stream never came up"
        time.sleep(0.05)
    before = client.get_entitlement("pkg-user", "offline_downloads")
    rpcs = client.rpcs
    hit = client.get_entitlement("pkg-user", "offline_downloads")
    rpcs_on_hit = client.rpcs - rpcs
    with EntitlementsClient(target, credential=admin, read_timeout=30) as writer:
        writer.grant_entitlement(ev.GrantEntitlementRequest(
            request_id="pkg-1", user_id="pkg-user",
            grant=ev.Grant(kind=ev.GRANT_KIND_SUPPORT, feature_id="offline_downloads"),
        ))
    while not client.get_entitlement("pkg-user", "offline_downloads").granted:
        assert time.monotonic() - began < 30, "the write was never seen"
        time.sleep(0.05)
try:
    import service  # noqa: F401  (the server's package: must not be here)
    server_importable = True
except ImportError:
    server_importable = False
print(json.dumps({
    "before": before.granted, "hit_is_cached": hit is before, "rpcs_on_hit": rpcs_on_hit,
    "server_importable": server_importable,
}))
"""


def test_the_installed_client_caches_and_sees_another_clients_write(
    client_python: Path, server_target: str, tmp_path: Path
) -> None:
    script = tmp_path / "client.py"
    script.write_text(SCRIPT)
    result = run(
        client_python, "-I", script, server_target, SERVICE_TOKEN, ADMIN_TOKEN, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert answer == {
        "before": False,
        "hit_is_cached": True,
        "rpcs_on_hit": 0,
        "server_importable": False,
    }
