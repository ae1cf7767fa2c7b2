"""The breaking-change gate of the protos: `buf breaking` against the committed image of
the released API passes for protos/ as they are, and fails for a breaking edit."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RELEASED = ROOT / "docs" / "api" / "entitlements-v1-released.binpb"
BUF = shutil.which("buf") or str(Path(sys.executable).parent / "buf")


def breaking(workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BUF, "breaking", "--against", str(RELEASED)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    if not Path(BUF).exists():
        pytest.skip("buf is not installed (pip install buf-bin; make setup does)")
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    return tmp_path


def test_the_protos_are_compatible_with_the_release(scratch: Path) -> None:
    result = breaking(scratch)
    assert result.returncode == 0, result.stdout + result.stderr


def test_removing_a_released_field_fails_the_gate(scratch: Path) -> None:
    proto = scratch / "protos" / "entitlements" / "v1" / "entitlement_service.proto"
    text = proto.read_text()
    assert "string catalog_version = 2;" in text
    proto.write_text(text.replace("string catalog_version = 2;", "", 1))
    result = breaking(scratch)
    assert result.returncode != 0
    assert "catalog_version" in result.stdout + result.stderr
