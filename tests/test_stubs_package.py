"""The stubs package for client teams (clients/python) on its own: `pip install
clients/python[typing]` into a fresh virtual environment (no system site-packages, none of
the server), then a client there that imports only the stubs calls a real server on a
loopback port, and mypy --strict type-checks client code against the package's .pyi types.

The fresh environment downloads grpcio and protobuf (and the typing extra's stub packages)
from the configured package index, or takes them from pip's cache: ~10 s when cached.
Without an index the tests skip with the reason, except in CI (CI=true), where they fail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import venv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.config import Settings
from service.grpc_api.auth import Role, credentials_yaml
from service.grpc_api.server import start_server
from storage.sqlite import SqliteRepository
from tests.state_writes import seed_demo_users
from tests.support.packaging import OFFLINE_SIGNS, ROOT, run

STUBS_PROJECT = ROOT / "clients" / "python"
MYPY = Path(sys.executable).parent / "mypy"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SERVICE_TOKEN = "stubs-test-service-token-0123456789"
ADMIN_TOKEN = "stubs-test-admin-token-0123456789"
API_DOC = ROOT / "docs" / "API.md"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def stubs_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh venv holding the stubs package (with its typing and status
    extras)."""
    folder = tmp_path_factory.mktemp("stubs-venv")
    # The build writes beside its sources (src/, build/): it runs on a copy, in the
    # repository's layout (clients/python reads ../../generated), not in the work tree.
    source = folder / "repo"
    shutil.copytree(
        STUBS_PROJECT,
        source / "clients" / "python",
        ignore=shutil.ignore_patterns("src", "build", "*.egg-info", "__pycache__"),
    )
    shutil.copy(STUBS_PROJECT.parent / "service_config.json", source / "clients")
    shutil.copytree(ROOT / "generated", source / "generated")
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(folder / "venv")
    python = folder / "venv" / "bin" / "python"
    project = source / "clients" / "python"
    installed = run(
        python, "-m", "pip", "install", "--quiet", f"{project}[typing,status]", cwd=folder
    )
    if installed.returncode != 0:
        output = installed.stdout + installed.stderr
        if os.environ.get("CI") != "true" and any(sign in output for sign in OFFLINE_SIGNS):
            pytest.skip(f"no package index to install grpcio and protobuf from:\n{output}")
        pytest.fail(f"pip install clients/python failed:\n{output}")
    return python


@pytest.fixture(scope="module")
def server_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server of the main environment, on SQLite seeded with the demo users."""
    folder = tmp_path_factory.mktemp("stubs-server")
    db = folder / "entitlements.db"
    seeder = SqliteRepository(db)
    seed_demo_users(seeder, NOW)
    seeder.close()
    credentials = folder / "credentials.yaml"
    credentials.write_text(
        credentials_yaml(
            [
                ("stubs-client", Role.SERVICE, SERVICE_TOKEN),
                ("stubs-admin", Role.ADMIN, ADMIN_TOKEN),
            ]
        )
    )
    settings = Settings(
        host="127.0.0.1",
        port=0,
        storage_url=f"sqlite:///{db}",
        credentials_file=credentials,
    )
    running = start_server(settings, repository=SqliteRepository(db), clock=lambda: NOW)
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        running.stop(grace_seconds=1)


CLIENT = """\
import json
import sys

import grpc

import entitlements
from entitlements.service_config import channel_options
from entitlements.v1 import entitlement_service_pb2, entitlement_service_pb2_grpc

target, token = sys.argv[1], sys.argv[2]
with grpc.insecure_channel(target, options=channel_options()) as channel:
    stub = entitlement_service_pb2_grpc.EntitlementServiceStub(channel)
    response = stub.GetEntitlement(
        entitlement_service_pb2.GetEntitlementRequest(
            user_id="demo-active", feature_id="offline_downloads"
        ),
        metadata=(("authorization", "Bearer " + token),),
        timeout=30,
    )
try:
    import service  # noqa: F401  (the server's package: must not be here)
    server_importable = True
except ImportError:
    server_importable = False
print(json.dumps({
    "granted": response.entitlement.granted,
    "plan_id": response.entitlement.plan_id,
    "stubs_file": entitlements.__file__,
    "server_importable": server_importable,
}))
"""


def test_a_client_with_only_the_stubs_calls_the_real_server(
    stubs_python: Path, server_target: str, tmp_path: Path
) -> None:
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    # -I: isolated from the user's site and PYTHONPATH; cwd is outside the repository.
    result = run(stubs_python, "-I", script, server_target, SERVICE_TOKEN, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert answer["granted"] is True
    assert answer["plan_id"] == "premium_individual"
    assert Path(answer["stubs_file"]).is_relative_to(stubs_python.parent.parent)
    assert answer["server_importable"] is False


def test_the_package_requires_only_grpcio_and_protobuf(stubs_python: Path, tmp_path: Path) -> None:
    probe = (
        "import json; from importlib.metadata import requires, version; "
        "print(json.dumps([version('entitlements-api-stubs'), "
        "requires('entitlements-api-stubs')]))"
    )
    result = run(stubs_python, "-I", "-c", probe, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    version, requirements = json.loads(result.stdout)
    from service import API_VERSION

    assert version == API_VERSION
    runtime = sorted(r for r in requirements if "extra ==" not in r)
    assert [r.split(">")[0].split("<")[0] for r in runtime] == ["grpcio", "protobuf"], runtime


TYPED_CLIENT = """\
import grpc

from entitlements.service_config import channel_options
from entitlements.v1 import entitlement_service_pb2, entitlement_service_pb2_grpc


def plan_of(channel: grpc.Channel, user_id: str) -> str:
    stub = entitlement_service_pb2_grpc.EntitlementServiceStub(channel)
    request = entitlement_service_pb2.GetEntitlementRequest(user_id=user_id)
    return stub.GetEntitlement(request).entitlement.plan_id


def options() -> list[tuple[str, str | int]]:
    return channel_options()
"""

# The same calls with the types wrong: a field name that does not exist and a str taken
# for an int. Had mypy not found the package's types, both would pass as Any.
MISTYPED_CLIENT = """\
from entitlements.v1 import entitlement_service_pb2


def quota(response: entitlement_service_pb2.GetEntitlementResponse) -> int:
    return response.entitlement.plan_id


request = entitlement_service_pb2.GetEntitlementRequest(user="u1")
"""


def mypy_in(stubs_python: Path, folder: Path, source: str) -> subprocess.CompletedProcess[str]:
    (folder / "client.py").write_text(textwrap.dedent(source))
    (folder / "mypy.ini").write_text("[mypy]\nstrict = True\n")
    return run(
        MYPY,
        "--config-file",
        folder / "mypy.ini",
        "--python-executable",
        stubs_python,
        "--no-incremental",
        "client.py",
        cwd=folder,
    )


def test_mypy_sees_the_types_of_the_installed_stubs(stubs_python: Path, tmp_path: Path) -> None:
    typed = tmp_path / "typed"
    typed.mkdir()
    result = mypy_in(stubs_python, typed, TYPED_CLIENT)
    assert result.returncode == 0, result.stdout + result.stderr

    mistyped = tmp_path / "mistyped"
    mistyped.mkdir()
    result = mypy_in(stubs_python, mistyped, MISTYPED_CLIENT)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Incompatible return value type (got "str", expected "int")' in result.stdout
    assert 'Unexpected keyword argument "user"' in result.stdout


def documented_example(heading: str) -> str:
    """The first Python block under a heading of docs/API.md, as a reader copies it."""
    text = API_DOC.read_text(encoding="utf-8")
    start = text.index(f"{heading}\n")
    block = text[start:].split("```python\n", 1)[1].split("```", 1)[0]
    return block


# What the reader of the example has already: a channel, a stub, a token (docs/API.md sets
# them up just above). After the example, its error_details() on a FAILED_PRECONDITION.
EXAMPLE_BEFORE = """\
import sys

import grpc

from entitlements.service_config import channel_options
from entitlements.v1 import entitlement_service_pb2, entitlement_service_pb2_grpc
from entitlements.v1 import common_pb2, subscription_event_service_pb2
from entitlements.v1 import subscription_event_service_pb2_grpc

target, token, admin_token = sys.argv[1], sys.argv[2], sys.argv[3]
channel = grpc.insecure_channel(target, options=channel_options())
stub = entitlement_service_pb2_grpc.EntitlementServiceStub(channel)
"""
EXAMPLE_AFTER = """\
writes = subscription_event_service_pb2_grpc.SubscriptionEventServiceStub(channel)
try:
    writes.RedeemOffer(
        subscription_event_service_pb2.RedeemOfferRequest(
            request_id="stubs-redeem-1", user_id="demo-active", subscription_id="stubs-sub-1",
            offer_id="premium-individual-trial-1m", market="US",
            platform=common_pb2.PLATFORM_IOS, store=common_pb2.STORE_APP_STORE,
        ),
        metadata=(("authorization", f"Bearer {admin_token}"),),
        timeout=30,
    )
except grpc.RpcError as error:
    print(error.code(), error_details(error))
"""


def test_the_documented_error_details_example_decodes_the_servers_details(
    stubs_python: Path, server_target: str, tmp_path: Path
) -> None:
    """docs/API.md's example, in the fresh venv with the `status` extra, against a real
    server: the BadRequest of an empty user id, the ErrorInfo of an ineligible offer."""
    example = documented_example("#### Error details: BadRequest and ErrorInfo need grpcio-status")
    script = tmp_path / "details.py"
    script.write_text(EXAMPLE_BEFORE + example + EXAMPLE_AFTER)
    result = run(
        stubs_python, "-I", script, server_target, SERVICE_TOKEN, ADMIN_TOKEN, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    bad_request, error_info = result.stdout.strip().splitlines()
    assert bad_request.startswith("StatusCode.INVALID_ARGUMENT ['bad field user_id: "), bad_request
    # demo-active has Premium: the trial is for those who never had it.
    assert error_info == "StatusCode.FAILED_PRECONDITION ['entitlements.v1 HAD_PREMIUM_BEFORE {}']"
