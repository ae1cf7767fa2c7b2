"""Where the client commands find the local data folder: the development tokens that
`entitlements serve` generated, and the consistency tokens of this folder's last writes.

Looked up wherever the command runs from, first match wins:
1. $ENTITLEMENTS_DATA_DIR (the folder `make run` passes to the server);
2. a `data/` folder holding the development tokens in the working directory or any
   folder above it (a command run from `docs/` or `service/cli/` of the checkout);
3. the `data/` folder of the checkout this package runs from (an editable install).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import service
from service.config import DEFAULT_DATA_DIR, ENV_PREFIX
from service.grpc_api.auth import DEV_TOKENS_FILE

DATA_DIR_ENV = ENV_PREFIX + "DATA_DIR"


def find_data_dir(environ: Mapping[str, str] = os.environ, cwd: Path | None = None) -> Path | None:
    """The data folder, or None when there is none (no server ran here)."""
    start = (cwd or Path.cwd()).resolve()
    if environ.get(DATA_DIR_ENV):
        return start / environ[DATA_DIR_ENV]
    for folder in (start, *start.parents):
        candidate = folder / DEFAULT_DATA_DIR
        if (candidate / DEV_TOKENS_FILE).is_file():
            return candidate
    checkout = Path(service.__file__).resolve().parent.parent / DEFAULT_DATA_DIR
    if (checkout / DEV_TOKENS_FILE).is_file():
        return checkout
    return None
