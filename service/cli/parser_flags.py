"""What the commands of `entitlements` share on the command line: making a subcommand with
its description and examples, the --storage flag, the connection, credential and TLS flags
of the client commands, the read-your-writes flags of the reads, the --request-id and user
of the writes, and a positive number's type."""

from __future__ import annotations

import argparse
import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from service.cli.locations import DATA_DIR_ENV
from service.cli.rpc_commands import DEFAULT_TARGET
from service.config import CREDENTIAL_ENV, DEFAULT_STORAGE_URL, TARGET_ENV
from service.grpc_api.auth import DEV_TOKENS_FILE, Role

if TYPE_CHECKING:
    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def command(
    commands: Commands, name: str, summary: str, description: str, *examples: str
) -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, 88),
        epilog=examples_epilog(*examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return sub


def examples_epilog(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def storage_flag(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--storage",
        metavar="URL",
        help=f"storage URL (default $ENTITLEMENTS_STORAGE_URL, else {DEFAULT_STORAGE_URL}): "
        "sqlite:///relative.db, sqlite:////absolute.db, memory:// or spanner://projects/P/"
        "instances/I/databases/D",
    )


# The deadline of a stream's side calls (the catalog for an unknown feature's hint).
SIDE_CALL_TIMEOUT = 5.0


def add_connection_arguments(
    sub: argparse.ArgumentParser,
    role: Role,
    timeout: float | None,
    json_help: str = "print the response as JSON (protobuf's JSON mapping, proto field "
    "names, every field) instead of text",
) -> None:
    """--target, the bearer credential, TLS, --timeout and --json of a client command.
    `role` picks the development token sent when neither --credential nor
    $ENTITLEMENTS_CREDENTIAL is given (Role.ADMIN for writes and history). A stream has
    no --timeout (`timeout` None): it lasts until the command ends it."""
    group = sub.add_argument_group("server and authentication")
    group.add_argument(
        "--target",
        default=os.environ.get(TARGET_ENV, DEFAULT_TARGET),
        metavar="HOST:PORT",
        help=f"server address (default ${TARGET_ENV}, else {DEFAULT_TARGET})",
    )
    group.add_argument(
        "--credential",
        metavar="BEARER_TOKEN",
        help=f"the bearer token that authenticates the call (sent as 'authorization: Bearer "
        f"...'; not a consistency token). Default ${CREDENTIAL_ENV}, else the "
        f"{role.value} token of the development credentials: data/{DEV_TOKENS_FILE} found "
        f"in ${DATA_DIR_ENV}, in this folder or one above, or in the checkout",
    )
    group.add_argument("--tls-ca", type=Path, metavar="PEM", help="use TLS, trusting this CA")
    group.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="client certificate (mutual TLS)"
    )
    group.add_argument("--tls-key", type=Path, metavar="PEM", help="the client certificate's key")
    if timeout is None:
        sub.set_defaults(timeout=SIDE_CALL_TIMEOUT)
    else:
        group.add_argument(
            "--timeout",
            type=float,
            default=timeout,
            metavar="SECONDS",
            help=f"deadline of the call (default {timeout:g})",
        )
    sub.add_argument("--json", action="store_true", help=json_help)
    sub.set_defaults(credential_role=role)


def add_consistency_arguments(sub: argparse.ArgumentParser) -> None:
    group = sub.add_argument_group(
        "read-your-writes",
        "By default a read passes the consistency token of this checkout's last write to "
        "the user (remembered in the data folder), so it sees that write whichever server "
        "process answers.",
    )
    group.add_argument(
        "--consistency-token",
        "--token",
        dest="token",
        default="",
        metavar="CONSISTENCY_TOKEN",
        help="the consistency token a write printed: the answer is never older than that "
        "write (not the bearer credential; that is --credential)",
    )
    group.add_argument(
        "--fresh",
        action="store_true",
        help="bypass the server's cache: read the user's state from the store",
    )


def read_command(
    commands: Commands, name: str, summary: str, description: str, *examples: str
) -> argparse.ArgumentParser:
    sub = command(commands, name, summary, description, *examples)
    add_connection_arguments(sub, Role.SERVICE, timeout=5.0)
    add_consistency_arguments(sub)
    return sub


def positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    """An argparse type: a number of `kind` above 0."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0: {text!r}")
        return value

    return parse


def write_command(
    commands: Commands,
    name: str,
    summary: str,
    description: str,
    *examples: str,
    user: tuple[str, str] = ("USER", "the user id"),
) -> argparse.ArgumentParser:
    """A write command; `user` is the metavar and help of the user it writes to."""
    sub = command(
        commands,
        name,
        summary,
        description + " Needs the admin credential. Prints the write's consistency token "
        "and the command that reads it back; later reads of the user from this checkout "
        "pass the token by themselves.",
        *examples,
    )
    add_connection_arguments(sub, Role.ADMIN, timeout=10.0)
    sub.add_argument(
        "--request-id",
        metavar="ID",
        help="idempotency key: the same command with the same id replays the first answer "
        "(default: a new id, so a repeated command is a new write)",
    )
    sub.add_argument("user_id", metavar=user[0], help=user[1])
    return sub
