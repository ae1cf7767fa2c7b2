"""Debian packages for `make generate-clients` and `make check-clients` without root: the
packages and the dependencies this machine lacks are downloaded (`apt-get download`, which
needs no root) and unpacked (`dpkg -x`) under one folder, whose usr/bin then goes on PATH.
Absolute symbolic links inside them (Debian's Go points /usr/lib/go-1.19/src at
/usr/share/go-1.19/src) are made relative, so they resolve inside that folder.

    python clients/fetch_debs.py ROOT PACKAGE...

Needs the machine's package lists (an earlier `apt-get update`); prints what it fetched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def missing_packages(packages: list[str]) -> list[str]:
    """What `apt-get install --no-install-recommends` would install: the packages and their
    missing dependencies, one of each set of alternatives (a simulation needs no root)."""
    simulated = _run("apt-get", "-s", "-q", "install", "--no-install-recommends", *packages)
    return [line.split()[1] for line in simulated.splitlines() if line.startswith("Inst ")]


def _run(*command: str, cwd: Path | None = None) -> str:
    return subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True).stdout


def relativize_links(root: Path) -> int:
    """Points the absolute links under `root` at the same path under `root`."""
    changed = 0
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            link = Path(folder) / name
            if not link.is_symlink():
                continue
            target = os.readlink(link)
            if not target.startswith("/"):
                continue
            inside = root / target.lstrip("/")
            link.unlink()
            link.symlink_to(os.path.relpath(inside, link.parent))
            changed += 1
    return changed


def fetch(root: Path, packages: list[str]) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    wanted = missing_packages(packages)
    with tempfile.TemporaryDirectory() as downloads:
        if wanted:
            _run("apt-get", "download", "-q", *wanted, cwd=Path(downloads))
        for deb in sorted(Path(downloads).glob("*.deb")):
            _run("dpkg", "-x", str(deb), str(root))
    relativize_links(root)
    return wanted


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    root, packages = Path(argv[0]).absolute(), argv[1:]
    fetched = fetch(root, packages)
    print(f"unpacked into {root}: {' '.join(fetched) if fetched else 'nothing (all installed)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
