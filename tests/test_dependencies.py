"""The dependencies: declared, locked, installed and packaged consistently.

- Every package imported by the repository's Python code is declared in pyproject.toml:
  the shipped code (service/, storage/, generated/ and the image's deploy/healthcheck.py) in
  [project] dependencies, the tests and benchmarks there or in an extra. A package that only
  arrives as a dependency of a dependency can vanish with that dependency's next release.
- The grpcio family (grpcio, grpcio-tools, grpcio-health-checking, grpcio-reflection,
  grpcio-status) is at one version, in pyproject.toml and in the lock.
- requirements-lock.txt (`make lock`) pins every requirement of pyproject.toml at a version
  its specifier allows, and the venv holds exactly the locked versions (`make setup`
  installs the lock).
- The wheel carries the files the service reads at run time (the SQL migrations, the
  example catalog, the stubs' .pyi files), and the service finds them installed from it,
  not from this checkout.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements-lock.txt"
# The image's lock (deploy/Dockerfile): the runtime dependencies only, at LOCK's versions.
RUNTIME_LOCK = ROOT / "requirements-runtime-lock.txt"

# Code that ships (the wheel, and the image's probe): only [project] dependencies.
SHIPPED_ROOTS = ("service", "storage", "generated", "deploy")
# Code that runs from the checkout: [project] dependencies or any extra.
CHECKOUT_ROOTS = ("tests", "benchmarks")
# clients/ holds the stubs-only package, which declares its own dependencies.
FIRST_PARTY = frozenset(
    {"service", "storage", "entitlements", "entitlements_client", "tests", "benchmarks", "deploy"}
)
GRPCIO_FAMILY = re.compile(r"^grpcio(-[a-z-]+)?$")
# `name==version` and an optional environment marker, as pip-compile writes a pin.
LOCK_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def _pyproject() -> dict[str, object]:
    with PYPROJECT.open("rb") as file:
        project: dict[str, object] = tomllib.load(file)["project"]
    return project


def runtime_requirements() -> list[Requirement]:
    dependencies = _pyproject()["dependencies"]
    assert isinstance(dependencies, list)
    return [Requirement(line) for line in dependencies]


def extra_requirements() -> dict[str, list[Requirement]]:
    extras = _pyproject().get("optional-dependencies", {})
    assert isinstance(extras, dict)
    return {name: [Requirement(line) for line in lines] for name, lines in extras.items()}


def all_requirements() -> list[Requirement]:
    return runtime_requirements() + [r for rs in extra_requirements().values() for r in rs]


def locked_pins(lock: Path = LOCK) -> dict[str, tuple[Version, str | None]]:
    """The lock's pins: canonical name -> (version, environment marker or None)."""
    pins: dict[str, tuple[Version, str | None]] = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = LOCK_PIN.match(line)
        if match:
            name, version, marker = match.groups()
            pins[canonicalize_name(name)] = (Version(version), marker)
    return pins


# --- which distribution provides an imported module ----------------------------------------


@cache
def module_owners() -> dict[tuple[str, ...], frozenset[str]]:
    """Each module or package path (("google", "rpc"), ...) -> the installed distributions
    whose files provide it (a namespace package such as ("google",) has several)."""
    owners: defaultdict[tuple[str, ...], set[str]] = defaultdict(set)
    for distribution in metadata.distributions():
        name = canonicalize_name(distribution.metadata["Name"])
        for file in distribution.files or ():
            parts = file.parts
            if not parts or ".." in parts or parts[0].endswith((".dist-info", ".data")):
                continue
            stem = parts[-1].split(".", 1)[0]
            if not parts[-1].endswith((".py", ".so", ".pyd")) or not stem.isidentifier():
                continue
            module = parts[:-1] if stem == "__init__" else (*parts[:-1], stem)
            for depth in range(1, len(module) + 1):
                owners[module[:depth]].add(name)
    return {module: frozenset(names) for module, names in owners.items()}


def owner_of(dotted: str) -> frozenset[str]:
    """The distributions providing the longest installed prefix of `dotted` (a module, or
    a module followed by the name of an attribute)."""
    parts = tuple(dotted.split("."))
    owners = module_owners()
    for depth in range(len(parts), 0, -1):
        found = owners.get(parts[:depth])
        if found:
            return found
    return frozenset()


def imports_of(path: Path) -> Iterator[tuple[str, int]]:
    """(dotted name, line) of every absolute import in the file, in functions and `try`
    blocks too; `from a.b import c` gives "a.b.c" (c may be a module or an attribute)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno


def third_party_imports(roots: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """(dotted name, "file:line") of every import, in the Python files under `roots`, of a
    module that is neither the standard library's nor this repository's."""
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            if "node_modules" in path.parts:
                continue
            for dotted, line in imports_of(path):
                top = dotted.split(".", 1)[0]
                if top in sys.stdlib_module_names or top in FIRST_PARTY:
                    continue
                yield dotted, f"{path.relative_to(ROOT)}:{line}"


def undeclared(roots: tuple[str, ...], declared: set[str]) -> list[str]:
    problems = []
    for dotted, where in third_party_imports(roots):
        owners = owner_of(dotted)
        if not owners:
            problems.append(f"{where}: {dotted}: no installed distribution provides it")
        elif len(owners) > 1:
            problems.append(f"{where}: {dotted}: provided by several ({sorted(owners)})")
        elif not owners & declared:
            problems.append(f"{where}: {dotted}: from {next(iter(owners))}, not declared")
    return problems


# --- the tests -------------------------------------------------------------------------------


def test_the_import_scanner_sees_the_imports_of_the_shipped_code() -> None:
    found = {dotted.split(".", 2)[1] for dotted, _ in third_party_imports(("service", "storage"))
             if dotted.startswith("google.")}  # fmt: skip
    # The three that arrived only as dependencies of google-cloud-spanner (issue 15).
    assert {"rpc", "api_core", "auth"} <= found
    assert owner_of("google.rpc.status_pb2") == {"googleapis-common-protos"}
    assert owner_of("google.api_core.exceptions") == {"google-api-core"}
    assert owner_of("google.protobuf.message.Message") == {"protobuf"}


def test_the_shipped_code_imports_only_runtime_dependencies() -> None:
    declared: set[str] = {canonicalize_name(r.name) for r in runtime_requirements()}
    problems = undeclared(SHIPPED_ROOTS, declared)
    assert not problems, "add them to [project] dependencies:\n" + "\n".join(problems)


def test_tests_and_benchmarks_import_only_declared_dependencies() -> None:
    declared: set[str] = {canonicalize_name(r.name) for r in all_requirements()}
    problems = undeclared(CHECKOUT_ROOTS, declared)
    assert not problems, "add them to pyproject.toml (dev extra):\n" + "\n".join(problems)


def test_the_grpcio_family_is_at_one_version() -> None:
    declared = {
        canonicalize_name(r.name): str(r.specifier)
        for r in all_requirements()
        if GRPCIO_FAMILY.match(canonicalize_name(r.name))
    }
    assert {"grpcio", "grpcio-tools", "grpcio-status"} <= declared.keys()
    assert len(set(declared.values())) == 1, f"pyproject.toml: {declared}"
    assert next(iter(declared.values())).startswith("=="), f"pin them exactly: {declared}"
    locked = {name: str(pin[0]) for name, pin in locked_pins().items() if GRPCIO_FAMILY.match(name)}
    assert declared.keys() <= locked.keys()
    assert len(set(locked.values())) == 1, f"{LOCK.name}: {locked}"


def test_the_lock_pins_every_requirement_at_an_allowed_version() -> None:
    pins = locked_pins()
    assert len(pins) > 50, f"{LOCK.name} looks truncated: {len(pins)} pins"
    problems = []
    for requirement in all_requirements():
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement}: not in the lock")
        elif not requirement.specifier.contains(pins[name][0], prereleases=True):
            problems.append(f"{requirement}: locked at {pins[name][0]}")
    assert not problems, f"run `make lock` ({LOCK.name} is stale):\n" + "\n".join(problems)


def test_the_lock_has_a_hash_for_every_pin() -> None:
    # `pip install -r` checks hashes only when every requirement has one (pip-compile
    # --generate-hashes): a hand-added pin without one would switch the check off.
    for lock in (LOCK, RUNTIME_LOCK):
        blocks = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text(encoding="utf-8"))
        pinned = [b for b in blocks if LOCK_PIN.match(b.split("\n")[0])]
        assert len(pinned) == len(locked_pins(lock)), f"{lock.name}: some pins are not seen"
        unhashed = [b.split()[0] for b in pinned if "--hash=sha256:" not in b]
        assert not unhashed, f"pins without --hash in {lock.name}: {unhashed}"


def locked_hashes(lock: Path) -> dict[str, frozenset[str]]:
    """Each pin's hashes: canonical name -> {"sha256:..."}."""
    hashes: dict[str, frozenset[str]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock.read_text(encoding="utf-8")):
        match = LOCK_PIN.match(block.split("\n")[0])
        if match:
            found = re.findall(r"--hash=(sha256:[0-9a-f]+)", block)
            hashes[canonicalize_name(match.group(1))] = frozenset(found)
    return hashes


PROJECT = "entitlement-offer-service"


def locked_reasons(lock: Path) -> dict[str, set[str]]:
    """Each pin's "# via" notes: canonical name -> the names that require it."""
    reasons: dict[str, set[str]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock.read_text(encoding="utf-8")):
        match = LOCK_PIN.match(block.split("\n")[0])
        if match:
            via = re.findall(r"#\s+(?:via\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)", block)
            names: set[str] = {canonicalize_name(v) for v in via if v != "via"}
            reasons[canonicalize_name(match.group(1))] = names
    return reasons


def test_the_runtime_lock_is_the_lock_cut_to_the_runtime_dependencies() -> None:
    """The image installs requirements-runtime-lock.txt (`make lock` writes both): the same
    versions and hashes as the full lock, every [project] dependency, no extra's."""
    full, runtime = locked_pins(), locked_pins(RUNTIME_LOCK)
    full_hashes, runtime_hashes = locked_hashes(LOCK), locked_hashes(RUNTIME_LOCK)
    problems = []
    for name, (version, marker) in sorted(runtime.items()):
        if name not in full:
            problems.append(f"{name}: not in {LOCK.name}")
        elif full[name] != (version, marker):
            problems.append(f"{name}: {version} here, {full[name][0]} in {LOCK.name}")
        elif not runtime_hashes[name] or runtime_hashes[name] != full_hashes[name]:
            problems.append(f"{name}: hashes differ from {LOCK.name}")
    for requirement in runtime_requirements():
        name = canonicalize_name(requirement.name)
        if name not in runtime:
            problems.append(f"{requirement}: not in {RUNTIME_LOCK.name}")
    # Each pin is there for the project or for another pin of this lock (pip-compile's
    # "# via" notes), never for an extra (a test tool in the image).
    direct = {canonicalize_name(r.name) for r in runtime_requirements()}
    for name, reasons in sorted(locked_reasons(RUNTIME_LOCK).items()):
        if not reasons & ({PROJECT} | set(runtime)):
            problems.append(f"{name}: there for {sorted(reasons)}, not the runtime")
        if PROJECT in reasons and name not in direct:
            problems.append(f"{name}: not a [project] dependency (an extra's?)")
    assert not problems, f"run `make lock` ({RUNTIME_LOCK.name} is stale):\n" + "\n".join(problems)


def test_the_venv_holds_the_locked_versions() -> None:
    problems = []
    for name, (version, marker) in sorted(locked_pins().items()):
        if marker is not None and not Marker(marker).evaluate():
            continue  # not for this platform
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            problems.append(f"{name}: not installed (locked {version})")
            continue
        if installed != version:
            problems.append(f"{name}: {installed} installed, {version} locked")
    assert not problems, "run `make setup` (it installs the lock):\n" + "\n".join(problems)


# --- the wheel -------------------------------------------------------------------------------

# What the package needs to build: its configuration and the source trees it packages.
SOURCES = ("pyproject.toml", "README.md", "service", "storage", "generated")


def _data_files() -> set[str]:
    """The non-Python files the service reads, as paths inside the wheel."""
    files = {"service/catalog/example_catalog.yaml"}
    for backend in ("sqlite", "spanner"):
        for sql in (ROOT / "storage" / backend / "migrations").glob("*.sql"):
            files.add(f"storage/{backend}/migrations/{sql.name}")
    for stub in (ROOT / "generated" / "entitlements" / "v1").glob("*.pyi"):
        files.add(f"entitlements/v1/{stub.name}")
    return files


def _run(command: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of a copy of the sources (a build in the checkout would leave build/
    behind and race other runs), built with the venv's locked setuptools, offline."""
    import shutil

    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    output = _run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--wheel-dir", str(work / "dist"), str(source)],
        cwd=work,
    )  # fmt: skip
    assert "warning" not in output.lower(), f"the build warns:\n{output}"
    (wheel,) = (work / "dist").glob("*.whl")
    return wheel


def test_the_wheel_carries_the_data_files_and_no_test_tooling(built_wheel: Path) -> None:
    with zipfile.ZipFile(built_wheel) as archive:
        names = set(archive.namelist())
    assert _data_files() - names == set()
    packaged = {name.rsplit("/", 1)[0] for name in names if name.endswith(".py")}
    assert {"service/grpc_api/auth", "storage/spanner", "entitlements/v1"} <= packaged
    assert not any(name.startswith("storage/spanner/testing/") for name in names)
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)
    assert not any("__pycache__" in name for name in names)


def test_an_installed_wheel_finds_its_migrations_and_catalog(
    built_wheel: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    _run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", str(site), str(built_wheel)],
        cwd=tmp_path,
    )  # fmt: skip
    # Run from elsewhere, with the installed copy ahead of the venv's editable install of
    # this checkout (its finder comes after sys.path): every module must come from `site`.
    probe = f"""
import sys
from pathlib import Path
import entitlements.v1.entitlement_service_pb2 as stubs, service, storage
from service.catalog.loader import load_catalog
from storage.spanner import schema as spanner_schema
from storage.sqlite import SqliteRepository
site = Path({str(site)!r})
for module in (service, storage, stubs):
    assert site in Path(module.__file__).parents, module.__file__
assert load_catalog().features, "the example catalog is empty"
repository = SqliteRepository(Path({str(tmp_path)!r}) / "installed.db")
print("sqlite", len(repository.applied_migrations))
repository.close()
print("spanner", len(spanner_schema.migrations()))
"""
    environment = {**os.environ, "PYTHONPATH": str(site)}
    output = _run([sys.executable, "-c", probe], cwd=tmp_path, env=environment)
    sqlite_count = len(list((ROOT / "storage" / "sqlite" / "migrations").glob("*.sql")))
    spanner_count = len(list((ROOT / "storage" / "spanner" / "migrations").glob("*.sql")))
    assert f"sqlite {sqlite_count}" in output, output
    assert f"spanner {spanner_count}" in output, output
    script = site / "bin" / "entitlements"
    assert script.is_file()
    _run([sys.executable, str(script), "--help"], cwd=tmp_path, env=environment)
