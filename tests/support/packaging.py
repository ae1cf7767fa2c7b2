"""Installing the published packages into a fresh venv: the repository root, a command
run without the main environment, and the signs of a machine without a package index."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository

# pip's words for "the index cannot be reached", as opposed to a broken package.
OFFLINE_SIGNS = ("NewConnectionError", "Could not find a version", "No matching distribution")


def run(*command: str | Path, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    # Nothing of the main environment leaks into the fresh one (PYTHONPATH, a venv's PATH).
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH",)}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
