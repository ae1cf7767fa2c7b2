"""The `entitlements` command run as a child: one command (run_cli) or `serve` in a folder
of its own (serve, Served), with a clean environment, and the development tokens serve
writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import ENTITLEMENTS, await_serving

# The caller's own ENTITLEMENTS_* settings must not leak into the out-of-the-box runs.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("ENTITLEMENTS_")}


def run_cli(
    *args: str, cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ENTITLEMENTS, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
        cwd=cwd,
        env={**CLEAN_ENV, **(env or {})},
    )


@dataclass
class Served:
    process: subprocess.Popen[str]
    target: str
    folder: Path
    output: list[str] = field(default_factory=list)  # stdout and stderr lines, drained

    def text(self) -> str:
        return "".join(self.output)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=30) == 0


def serve(folder: Path, *args: str, env: dict[str, str] | None = None) -> Served:
    """`entitlements serve --port 0 ARGS` in `folder`, once it reports its port. Its output
    is drained by a thread (and kept), so the server never blocks on a full pipe."""
    process = subprocess.Popen(
        [ENTITLEMENTS, "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=folder,
        env={**CLEAN_ENV, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    try:
        target, output, _ = await_serving(process)
    except BaseException:
        process.kill()
        process.wait(timeout=30)
        raise
    return Served(process, target, folder, output)


def dev_tokens(folder: Path) -> dict[str, str]:
    return dev_tokens_in(folder / "data")


def dev_tokens_in(data: Path) -> dict[str, str]:
    tokens: dict[str, str] = json.loads((data / "dev-tokens.json").read_text())
    return tokens
