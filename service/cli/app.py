"""Runs one `entitlements` command and reports configuration and input errors."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from service.catalog import CatalogError
from service.cli.errors import UsageError
from service.cli.parser import build_parser
from service.cli.preflight import StoreConfigurationError
from service.config import SettingsError
from service.domain.errors import StoreError
from service.grpc_api.auth import CredentialsError
from service.grpc_api.ports import AddressUnavailable
from service.grpc_api.workers import WorkerStartError
from storage.urls import UnsupportedStorageUrl

# What the operator or the command line got wrong: `error: ...`, exit status 2. Anything
# else (a ValueError included) is a bug and ends in a traceback. Failed RPCs are reported
# by the client commands themselves (service.cli.call), exit status 1.
INPUT_ERRORS = (
    AddressUnavailable,
    CatalogError,
    CredentialsError,
    SettingsError,
    StoreConfigurationError,
    UnsupportedStorageUrl,
    UsageError,
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        result: int = args.run(args)
        return result
    except INPUT_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (StoreError, WorkerStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # Whoever read our output stopped (`entitlements get-offers ... | head`): not an
        # error. Point stdout at /dev/null so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
