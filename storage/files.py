"""Owner-only folders for what the service keeps on disk (the SQLite database, development
credentials, the audit log): created 0700, whatever the umask, so that other local users
cannot list or read them. Folders that already exist are left as they are (they may be
shared on purpose)."""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIRECTORY_MODE = 0o700


def make_private_directory(path: Path) -> None:
    """Creates `path` and any missing parents with mode 0700; an existing one is kept."""
    missing = []
    current = Path(os.path.abspath(path))
    while not current.exists():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIRECTORY_MODE)
        except FileExistsError:
            continue  # another process made it: theirs is as good as ours
        os.chmod(folder, PRIVATE_DIRECTORY_MODE)  # the umask may have taken owner bits
