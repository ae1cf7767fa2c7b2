"""clients/fetch_debs.py: `make generate-clients` and `make check-clients` without root
(issue 25: they ran `sudo apt-get install` of Go and twenty packages). The packages are
downloaded and unpacked under a folder of ours; their absolute links are made to point
inside it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "clients" / "fetch_debs.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_debs", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_absolute_links_point_inside_the_folder(tmp_path: Path) -> None:
    """As Debian's Go: /usr/lib/go-1.19/src -> /usr/share/go-1.19/src."""
    root = tmp_path / "root"
    (root / "usr" / "share" / "go-1.19" / "src").mkdir(parents=True)
    (root / "usr" / "share" / "go-1.19" / "src" / "marker").write_text("inside")
    (root / "usr" / "lib" / "go-1.19").mkdir(parents=True)
    (root / "usr" / "lib" / "go-1.19" / "src").symlink_to("/usr/share/go-1.19/src")
    (root / "usr" / "bin").mkdir()
    (root / "usr" / "bin" / "go").symlink_to("../lib/go-1.19/bin/go")  # relative: kept
    assert _module().relativize_links(root) == 1
    assert (root / "usr" / "lib" / "go-1.19" / "src" / "marker").read_text() == "inside"
    assert os.readlink(root / "usr" / "bin" / "go") == "../lib/go-1.19/bin/go"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="not a Debian machine")
def test_a_plugin_is_fetched_and_runs_without_installing_it(tmp_path: Path) -> None:
    """protoc-gen-go-grpc, fetched as `make generate-clients` does without root: it runs
    from the folder, and dpkg still knows nothing of it unless it was installed before."""
    installed_before = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", "protoc-gen-go-grpc"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.endswith("installed")
    if installed_before:
        pytest.skip("protoc-gen-go-grpc is installed here: nothing to fetch")
    root = tmp_path / "debroot"
    fetched = subprocess.run(
        [sys.executable, str(SCRIPT), str(root), "protoc-gen-go-grpc"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert fetched.returncode == 0, fetched.stderr
    assert "protoc-gen-go-grpc" in fetched.stdout
    version = subprocess.run(
        [str(root / "usr" / "bin" / "protoc-gen-go-grpc"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert version.returncode == 0, version
    assert "protoc-gen-go-grpc" in version.stdout, version
