"""Real faults, made for real (the patterns of tests/integration/test_sqlite_faults.py):
SQLite's write lock held by another process, file modes that bind a server running as root
(setpriv without the capabilities overriding them), a small tmpfs filled up, a data
directory removed and restored from a backup. Every process started here is stopped by
its PID; every loop is bounded."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Holds SQLite's write lock (BEGIN IMMEDIATE) until its stdin closes.
_LOCK_HOLDER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
connection.execute("ROLLBACK")
connection.close()
"""


class FaultUnavailable(RuntimeError):
    """The fault cannot be made on this machine (the drill is skipped with this reason)."""


@contextlib.contextmanager
def lock_held_by_another_process(db: Path) -> Iterator[int]:
    """Another process holds the database's write lock inside the block; yields its pid."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _LOCK_HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        if line.strip() != "locked":
            raise RuntimeError(f"the lock holder failed: {line}{holder.stdout.read()}")
        yield holder.pid
    finally:
        if holder.stdin is not None:
            with contextlib.suppress(OSError):
                holder.stdin.close()
        try:
            holder.wait(10)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()


def without_file_capabilities() -> list[str]:
    """A command prefix under which file modes bind the process it runs: none unless
    root; as root, setpriv without the capabilities that override them. Raises
    FaultUnavailable where that cannot be done."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise FaultUnavailable("running as root without setpriv: file modes would not bind")
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]
    with tempfile.TemporaryDirectory(prefix="chaos-probe-") as folder:
        read_only = Path(folder) / "read-only"
        read_only.touch(mode=0o400)
        try:
            probe = subprocess.run(
                [*prefix, sys.executable, "-c", f"open({str(read_only)!r}, 'r+b')"],
                capture_output=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise FaultUnavailable(f"setpriv does not run here: {error}") from error
    if b"PermissionError" not in probe.stderr:
        raise FaultUnavailable(f"cannot drop root's file capabilities: {probe.stderr[-200:]!r}")
    return prefix


@contextlib.contextmanager
def read_only(db: Path) -> Iterator[None]:
    """The database file read-only (0400) inside the block, 0600 after."""
    db.chmod(0o400)
    try:
        yield
    finally:
        db.chmod(0o600)


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real file system of `size` mounted at `where` (needs root and mount)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        raise FaultUnavailable("mounting a small tmpfs needs root and mount(8)")
    where.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise FaultUnavailable(f"cannot mount a tmpfs here: {error}") from error
    if mounted.returncode != 0:
        raise FaultUnavailable(f"cannot mount a tmpfs here: {mounted.stderr.decode()[-200:]}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], timeout=30, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], timeout=30, check=False)


def fill(path: Path) -> int:
    """Writes `path` until its file system is full; the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as file:
        for chunk in (1 << 16, 1 << 12, 1 << 9):
            block = b"\0" * chunk
            with contextlib.suppress(OSError):
                # Bounded: a file system cannot take more than its size.
                for _ in range(1 << 20):
                    written += file.write(block)
    return written


def remove_data_directory(db: Path, backup: Path) -> None:
    """Backs the database up and removes its directory, with SQLite's write lock held
    throughout: every write acknowledged before is in the backup, and none is
    acknowledged in between. A write acknowledged after is in the removed file (lost)."""
    holder = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        holder.execute("BEGIN IMMEDIATE")
        reader = sqlite3.connect(db, timeout=30)
        target = sqlite3.connect(backup)
        try:
            reader.backup(target)  # WAL: a reader sees every committed write
        finally:
            target.close()
            reader.close()
        shutil.rmtree(db.parent)
        holder.execute("ROLLBACK")
    finally:
        holder.close()


def restore_data_directory(db: Path, backup: Path) -> None:
    """The directory made again and the backup put at the database's path (atomically)."""
    db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staged = db.with_name(db.name + ".restoring")
    shutil.copyfile(backup, staged)
    staged.chmod(0o600)
    os.replace(staged, db)
