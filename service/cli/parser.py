"""The command line of `entitlements`: its subcommands, their flags, and the command each
runs (`args.run(args)`). Every subcommand has a description, examples (its epilog) and
help on every argument; `serve`'s flags are generated from the settings
(service.cli.settings_flags)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from service.cli.dead_letter_commands import (
    dead_letters,
    link_store_account,
    reconcile_app_store,
    reconcile_play,
    replay_dead_letters,
)
from service.cli.parser_flags import (
    add_connection_arguments,
    command,
    examples_epilog,
    storage_flag,
)
from service.cli.parser_reads import add_read_commands
from service.cli.parser_writes import add_write_commands
from service.cli.rpc_commands import history
from service.cli.settings_flags import add_setting_flags
from service.cli.store_commands import migrate, seed_demo, serve, show_settings_reference
from service.grpc_api.auth import Role
from service.usecases.support import DEFAULT_HISTORY_ENTRIES, MAX_HISTORY_ENTRIES
from service.version import API_PACKAGE, API_VERSION, SERVER_VERSION

if TYPE_CHECKING:
    from service.cli.parser_flags import Commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="entitlements",
        description="The entitlement and offer service: run the server, prepare its store, "
        "and call it by hand.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples_epilog(
            "entitlements serve                                  # on 127.0.0.1:50051",
            "entitlements get-entitlement demo-active offline_downloads",
            "entitlements grant newbie --feature audiobook_hours --quota 30 --days 14",
            "entitlements history newbie",
            "entitlements watch newbie offline_downloads          # a message on every change",
            "entitlements COMMAND --help                         # each command's flags",
        ),
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"entitlements {SERVER_VERSION} (API {API_PACKAGE} {API_VERSION})",
        help="print the version of the server and CLI, and of the API it serves",
    )
    commands = parser.add_subparsers(
        required=True, metavar="COMMAND", title="commands", dest="command"
    )
    _add_server_commands(commands)
    add_read_commands(commands)
    add_write_commands(commands)
    _add_support_commands(commands)
    return parser


# -- server and store --------------------------------------------------------------------


def _add_server_commands(commands: Commands) -> None:
    _command_serve(commands)
    _command_seed_demo(commands)
    _command_migrate(commands)
    _command_settings_reference(commands)
    _command_dead_letters(commands)
    _command_replay_dead_letters(commands)


def _command_serve(commands: Commands) -> None:
    server = command(
        commands,
        "serve",
        "run the gRPC server",
        "Runs the gRPC server (one worker process per core by default, sharing the port). "
        "Without a credentials file it generates development credentials in the data "
        "folder (the log says where, never the tokens) that the client commands pick up. "
        "Every setting is a flag below and an ENTITLEMENTS_* environment variable; see "
        "docs/SETTINGS.md.",
        "entitlements serve",
        "entitlements serve --port 0 --storage memory://          # any free port, no files",
        "entitlements serve --workers 2 --cache-ttl-seconds 60 --log-format text",
        "ENTITLEMENTS_STORAGE_URL=spanner://projects/p/instances/i/databases/d entitlements serve",
    )
    add_setting_flags(server)
    server.set_defaults(run=serve)


def _command_seed_demo(commands: Commands) -> None:
    seed = command(
        commands,
        "seed-demo",
        "write the demo users to the store",
        "Writes the demo users (demo-free, demo-trial, demo-active, demo-grace, "
        "demo-canceled, demo-lapsed, demo-on-hold, demo-family-manager, demo-family-member, "
        "demo-student, demo-promo) through the write use cases (store events, grants, a "
        "household, a student verification), with times relative to now, so `history` "
        "tells why each has what it has. A store that holds them already is left as it is "
        "(the command says so), unless --reseed.",
        "entitlements seed-demo",
        "entitlements seed-demo --storage sqlite:///data/entitlements.db",
        "entitlements seed-demo --reseed",
    )
    storage_flag(seed)
    seed.add_argument(
        "--reseed",
        action="store_true",
        help="write the demo users' situations again, as of now, into a store that holds "
        "them already (new events and requests: their history keeps the earlier ones)",
    )
    seed.set_defaults(run=seed_demo)


def _command_migrate(commands: Commands) -> None:
    migration = command(
        commands,
        "migrate",
        "apply the store's pending schema migrations (needed for spanner://)",
        "Applies the store's pending schema migrations. A Cloud Spanner database needs it "
        "before the first `serve`; SQLite migrates itself when opened.",
        "entitlements migrate --storage spanner://projects/p/instances/i/databases/d",
    )
    storage_flag(migration)
    migration.set_defaults(run=migrate)


def _command_settings_reference(commands: Commands) -> None:
    reference = command(
        commands,
        "settings-reference",
        "print the settings reference (docs/SETTINGS.md) as Markdown",
        "Prints the reference of every setting (flag, environment variable, type, default, "
        "description) as Markdown, generated from service/config.py. docs/SETTINGS.md is "
        "its output.",
        "entitlements settings-reference > docs/SETTINGS.md",
    )
    reference.set_defaults(run=show_settings_reference)


def _command_dead_letters(commands: Commands) -> None:
    letters = command(
        commands,
        "dead-letters",
        "list store notifications that could not become events",
        "Lists the dead letters of store notifications (docs/INGESTION.md): what could "
        "not be mapped (unknown product, no user, an unhandled type...), with its reason, "
        "oldest first; open ones unless --all.",
        "entitlements dead-letters",
        "entitlements dead-letters --all --storage sqlite:///data/entitlements.db",
    )
    storage_flag(letters)
    letters.add_argument("--all", action="store_true", help="resolved letters too")
    letters.add_argument("--limit", type=int, default=100, help="at most this many")
    letters.set_defaults(run=dead_letters)


def _command_replay_dead_letters(commands: Commands) -> None:
    replay = command(
        commands,
        "replay-dead-letters",
        "map and record dead letters again, after a fix",
        "Maps each open dead letter (or those named) again with the current catalog and "
        "records it; a letter that now records is resolved. Exit status 1 when any stays.",
        "entitlements replay-dead-letters",
        "entitlements replay-dead-letters evt_1NqX... --storage sqlite:///data/entitlements.db",
    )
    storage_flag(replay)
    replay.add_argument("delivery_ids", nargs="*", metavar="ID", help="delivery ids to replay")
    replay.set_defaults(run=replay_dead_letters)

    reconcile = command(
        commands,
        "reconcile-play",
        "read USER's Google Play purchases again and record what is missing",
        "Reads each purchase token's state from the Play Developer API "
        "(purchases.subscriptionsv2; ENTITLEMENTS_PLAY_PACKAGE_NAME, ENTITLEMENTS_PLAY_API_URL) "
        "and records it for USER (docs/INGESTION.md). Exit status 1 when any could not be.",
        "entitlements reconcile-play u-123 TOKEN1 TOKEN2",
    )
    storage_flag(reconcile)
    reconcile.add_argument("user_id", metavar="USER", help="the user the purchases belong to")
    reconcile.add_argument("tokens", nargs="+", metavar="TOKEN", help="Play purchase tokens")
    reconcile.set_defaults(run=reconcile_play)

    reconcile_apple = command(
        commands,
        "reconcile-app-store",
        "read USER's App Store purchases again and record what is missing",
        "Reads each purchase's status from the App Store Server API (Get All Subscription "
        "Statuses; ENTITLEMENTS_APPLE_API_KEY_FILE, _KEY_ID, _ISSUER_ID, _BUNDLE_ID, "
        "_ENVIRONMENT), verifies it as notifications are (ENTITLEMENTS_APPLE_ROOT_CERTIFICATES) "
        "and records it for USER (docs/INGESTION.md). Exit status 1 when any could not be.",
        "entitlements reconcile-app-store u-123 2000000123456789",
    )
    storage_flag(reconcile_apple)
    reconcile_apple.add_argument(
        "user_id", metavar="USER", help="the user the purchases are recorded for"
    )
    reconcile_apple.add_argument(
        "original_transaction_ids",
        nargs="+",
        metavar="ORIGINAL_TRANSACTION_ID",
        help="App Store originalTransactionIds",
    )
    reconcile_apple.set_defaults(run=reconcile_app_store)

    link = command(
        commands,
        "link-store-account",
        "say which user a store account (Stripe customer, App Store purchase) belongs to",
        "Links a store account to a user, for notifications that do not name the user "
        "(docs/INGESTION.md): a Stripe customer id (cus_...) whose subscriptions lack "
        "metadata.user_id, an App Store originalTransactionId whose transactions lack "
        "appAccountToken. Then replay the dead letters it explains.",
        "entitlements link-store-account stripe cus_NffrFeUfNV2Hib u-123",
        "entitlements link-store-account app_store 2000000123456789 u-123",
    )
    storage_flag(link)
    link.add_argument("store", metavar="STORE", help="stripe or app_store")
    link.add_argument(
        "account_id",
        metavar="ACCOUNT",
        help="the store's account: a Stripe customer id, or an App Store originalTransactionId",
    )
    link.add_argument("user_id", metavar="USER", help="the user the store account belongs to")
    link.set_defaults(run=link_store_account)


def _add_support_commands(commands: Commands) -> None:
    user_history = command(
        commands,
        "history",
        "USER's append-only history (support: why does USER have Premium?)",
        "Prints the user's history, oldest first: every store event, grant, revocation, "
        "redemption and household change, with the user's version after each. Asks the "
        "server (AdminService.GetUserHistory, admin credential), so it shows what the "
        "server reads from its own store.",
        "entitlements history newbie",
        "entitlements history demo-family-member --json",
        "entitlements history newbie --target 10.0.0.5:50051 --credential $ADMIN_TOKEN",
    )
    add_connection_arguments(user_history, Role.ADMIN, timeout=10.0)
    user_history.add_argument(
        "--max-entries",
        type=int,
        default=0,
        metavar="N",
        help=f"only the newest N entries (default {DEFAULT_HISTORY_ENTRIES}, at most "
        f"{MAX_HISTORY_ENTRIES})",
    )
    # Before history asked the server it opened a store itself; refused with the reason.
    user_history.add_argument("--storage", help=argparse.SUPPRESS)
    user_history.add_argument("user_id", metavar="USER", help="the user id")
    user_history.set_defaults(run=history)
