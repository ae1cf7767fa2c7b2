"""The command line of `entitlements`: its subcommands, their flags, and the command each
runs (`args.run(args)`). Every subcommand has a description, examples (its epilog) and
help on every argument; `serve`'s flags are generated from the settings
(service.cli.settings_flags)."""

from __future__ import annotations

import argparse
import os
import textwrap
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import service
from service.cli.choices import EVENT_TYPES, GRANT_KINDS, PLATFORMS, STORES
from service.cli.locations import DATA_DIR_ENV
from service.cli.rpc_commands import (
    DEFAULT_TARGET,
    add_household_member,
    batch_get_entitlements,
    create_household,
    get_entitlement,
    get_offers,
    grant,
    history,
    list_entitlements,
    record_event,
    redeem_offer,
    remove_household_member,
    revoke,
    revoke_student,
    verify_student,
)
from service.cli.settings_flags import add_setting_flags
from service.cli.store_commands import migrate, seed_demo, serve, show_settings_reference
from service.cli.watch import watch
from service.config import CREDENTIAL_ENV, DEFAULT_STORAGE_URL, TARGET_ENV
from service.domain.validation import MAX_BATCH_QUERIES
from service.grpc_api.auth import DEV_TOKENS_FILE, Role
from service.usecases.support import DEFAULT_HISTORY_ENTRIES, MAX_HISTORY_ENTRIES

DISTRIBUTION = "entitlement-offer-service"
API_VERSION = "entitlements.v1"

if TYPE_CHECKING:
    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def server_version() -> str:
    """The version of this server (and CLI): service.__version__ where the package
    defines it, else the installed distribution's."""
    version = getattr(service, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="entitlements",
        description="The entitlement and offer service: run the server, prepare its store, "
        "and call it by hand.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples(
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
        version=f"entitlements {server_version()} (API {API_VERSION} {service.API_VERSION})",
        help="print the version of the server and CLI, and of the API it serves",
    )
    commands = parser.add_subparsers(
        required=True, metavar="COMMAND", title="commands", dest="command"
    )
    _add_server_commands(commands)
    _add_read_commands(commands)
    _add_write_commands(commands)
    _add_support_commands(commands)
    return parser


def _command(
    commands: Commands, name: str, summary: str, description: str, *examples: str
) -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, 88),
        epilog=_examples(*examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return sub


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _storage_flag(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--storage",
        metavar="URL",
        help=f"storage URL (default $ENTITLEMENTS_STORAGE_URL, else {DEFAULT_STORAGE_URL}): "
        "sqlite:///relative.db, sqlite:////absolute.db, memory:// or spanner://projects/P/"
        "instances/I/databases/D",
    )


# -- server and store --------------------------------------------------------------------


def _add_server_commands(commands: Commands) -> None:
    server = _command(
        commands,
        "serve",
        "run the gRPC server",
        "Runs the gRPC server (one worker process per core by default, sharing the port). "
        "Without a credentials file it generates development credentials in the data "
        "folder (printed once) that the client commands pick up. Every setting is a flag "
        "below and an ENTITLEMENTS_* environment variable; see docs/SETTINGS.md.",
        "entitlements serve",
        "entitlements serve --port 0 --storage memory://          # any free port, no files",
        "entitlements serve --workers 2 --cache-ttl-seconds 60 --log-format text",
        "ENTITLEMENTS_STORAGE_URL=spanner://projects/p/instances/i/databases/d entitlements serve",
    )
    add_setting_flags(server)
    server.set_defaults(run=serve)

    seed = _command(
        commands,
        "seed-demo",
        "write the demo users to the store",
        "Writes the demo users (demo-free, demo-trial, demo-active, demo-grace, "
        "demo-canceled, demo-lapsed, demo-on-hold, demo-family-manager, demo-family-member, "
        "demo-student, demo-promo) to the store, with times relative to now.",
        "entitlements seed-demo",
        "entitlements seed-demo --storage sqlite:///data/entitlements.db",
    )
    _storage_flag(seed)
    seed.set_defaults(run=seed_demo)

    migration = _command(
        commands,
        "migrate",
        "apply the store's pending schema migrations (needed for spanner://)",
        "Applies the store's pending schema migrations. A Cloud Spanner database needs it "
        "before the first `serve`; SQLite migrates itself when opened.",
        "entitlements migrate --storage spanner://projects/p/instances/i/databases/d",
    )
    _storage_flag(migration)
    migration.set_defaults(run=migrate)

    reference = _command(
        commands,
        "settings-reference",
        "print the settings reference (docs/SETTINGS.md) as Markdown",
        "Prints the reference of every setting (flag, environment variable, type, default, "
        "description) as Markdown, generated from service/config.py. docs/SETTINGS.md is "
        "its output.",
        "entitlements settings-reference > docs/SETTINGS.md",
    )
    reference.set_defaults(run=show_settings_reference)


# -- client commands ---------------------------------------------------------------------


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


def _add_consistency_arguments(sub: argparse.ArgumentParser) -> None:
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


def _read_command(
    commands: Commands, name: str, summary: str, description: str, *examples: str
) -> argparse.ArgumentParser:
    sub = _command(commands, name, summary, description, *examples)
    add_connection_arguments(sub, Role.SERVICE, timeout=5.0)
    _add_consistency_arguments(sub)
    return sub


def _add_read_commands(commands: Commands) -> None:
    get = _read_command(
        commands,
        "get-entitlement",
        "may USER use FEATURE now?",
        "Decides one feature for one user: granted or denied, why (source, state or denial "
        "reason), and until when the answer holds. A user the service has never seen is "
        "answered as a free user, with a note on stderr.",
        "entitlements get-entitlement demo-active offline_downloads",
        "entitlements get-entitlement newbie offline_downloads --consistency-token TOKEN",
        "entitlements get-entitlement demo-trial ad_free_playback --json",
    )
    get.add_argument("user_id", metavar="USER", help="the user id")
    get.add_argument(
        "feature_id",
        metavar="FEATURE",
        help="a feature id of the server's catalog (an unknown one lists them)",
    )
    get.set_defaults(run=get_entitlement)

    listing = _read_command(
        commands,
        "list-entitlements",
        "every feature of the catalog for USER",
        "Decides every feature of the server's catalog for one user, in catalog order.",
        "entitlements list-entitlements demo-family-member",
        "entitlements list-entitlements demo-grace --json",
    )
    listing.add_argument("user_id", metavar="USER", help="the user id")
    listing.set_defaults(run=list_entitlements)

    batch = _read_command(
        commands,
        "batch-get-entitlements",
        "decide many USER:FEATURE pairs (arguments or stdin)",
        "Decides many (user, feature) pairs with BatchGetEntitlements, in order, "
        f"{MAX_BATCH_QUERIES} pairs a call. The pairs come as arguments, or with none (or "
        "-) one a line on stdin, as USER:FEATURE or USER FEATURE (blank lines and # "
        "comments skipped). Remembered consistency tokens: one user's is passed; when "
        "several users of a call have one, the call reads fresh instead.",
        "entitlements batch-get-entitlements demo-active:offline_downloads "
        "demo-free:offline_downloads",
        "printf 'demo-trial ad_free_playback\\ndemo-grace offline_downloads\\n' | "
        "entitlements batch-get-entitlements",
        "entitlements batch-get-entitlements --json < pairs.txt",
    )
    batch.add_argument(
        "pairs",
        nargs="*",
        metavar="USER:FEATURE",
        help="a user id and a feature id joined by a colon; none or - reads stdin",
    )
    batch.set_defaults(run=batch_get_entitlements)

    offers = _read_command(
        commands,
        "get-offers",
        "offers USER may see",
        "Lists the subscription offers the user may see in a market on a platform, with "
        "local prices; --include-ineligible also lists the others with the reason.",
        "entitlements get-offers demo-free --market US --platform web --include-ineligible",
        "entitlements get-offers demo-lapsed --market SE --platform ios --json",
    )
    offers.add_argument("user_id", metavar="USER", help="the user id")
    offers.add_argument(
        "--market", required=True, metavar="COUNTRY", help="ISO 3166-1 alpha-2, e.g. SE"
    )
    offers.add_argument(
        "--platform", required=True, choices=sorted(PLATFORMS), help="where the offer is shown"
    )
    offers.add_argument(
        "--include-ineligible",
        action="store_true",
        help="also list the offers the user may not see, and why",
    )
    offers.set_defaults(run=get_offers)

    watching = _command(
        commands,
        "watch",
        "stream USER's decisions: now, then on every change",
        "Streams the user's decisions (WatchEntitlements): the current ones at once, then a "
        "new message whenever one changes, by a write (a purchase, a grant, the household "
        "manager's plan) or by time (a trial, period or grant ending). Each message shows "
        "why it came and its consistency token. Runs until --max-messages, --seconds or "
        "Ctrl-C (exit status 0). A stream the server ends with UNAVAILABLE (shutting down, "
        "or the connection's maximum age) is resumed from the last message; when no server "
        "answers that, it prints the command that resumes where it stopped "
        "(--resume-token) and exits with status 1.",
        "entitlements watch newbie",
        "entitlements watch newbie offline_downloads ad_free_playback --max-messages 2",
        "entitlements watch newbie --seconds 60 --json | jq .reason",
        "entitlements watch newbie --resume-token TOKEN      # after a disconnect",
    )
    add_connection_arguments(
        watching,
        Role.SERVICE,
        timeout=None,
        json_help="print each message as one line of JSON (protobuf's JSON mapping, proto "
        "field names, every field) instead of text",
    )
    watching.add_argument("user_id", metavar="USER", help="the user id")
    watching.add_argument(
        "feature_ids",
        nargs="*",
        metavar="FEATURE",
        help="feature ids of the server's catalog to watch (default: every feature)",
    )
    watching.add_argument(
        "--resume-token",
        default="",
        metavar="CONSISTENCY_TOKEN",
        help="resume after a disconnect: the consistency token of the last message "
        "received (default: the token of this checkout's last write to USER, if any)",
    )
    watching.add_argument(
        "--max-messages",
        type=_positive(int),
        metavar="N",
        help="end after N messages, the first included (default: no limit)",
    )
    watching.add_argument(
        "--seconds",
        type=_positive(float),
        metavar="S",
        help="end after S seconds (default: no limit)",
    )
    watching.set_defaults(run=watch)


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
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


def _write_command(
    commands: Commands,
    name: str,
    summary: str,
    description: str,
    *examples: str,
    user: tuple[str, str] = ("USER", "the user id"),
) -> argparse.ArgumentParser:
    """A write command; `user` is the metavar and help of the user it writes to."""
    sub = _command(
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


def _add_write_commands(commands: Commands) -> None:
    event = _write_command(
        commands,
        "record-event",
        "record a store or checkout event for USER",
        "Records a subscription lifecycle event (as the App Store, Google Play or the web "
        "checkout would send it). Idempotent on the event id (--request-id).",
        "entitlements record-event newbie --type purchased --subscription sub-1 --store web "
        "--plan premium_individual --period-days 30 --market SE",
        "entitlements record-event newbie --type canceled --subscription sub-1 --store web",
        "entitlements record-event newbie --type refunded --subscription sub-1 --store web "
        "--refunded-period-end 2026-12-26T10:00:00+00:00",
    )
    event.add_argument(
        "--type", required=True, choices=sorted(EVENT_TYPES), dest="event_type", help="event"
    )
    event.add_argument("--subscription", required=True, help="the store's subscription id")
    event.add_argument("--store", required=True, choices=sorted(STORES), help="where it was bought")
    event.add_argument("--occurred-at", metavar="TIME", help="ISO 8601 time (default: now)")
    event.add_argument("--plan", help="plan after the event (purchased, trial, plan change)")
    event.add_argument(
        "--period-days", type=float, metavar="N", help="current period ends in N days"
    )
    event.add_argument("--grace-days", type=float, metavar="N", help="grace period ends in N days")
    event.add_argument("--offer", help="the offer the subscription started with")
    event.add_argument("--market", metavar="COUNTRY", help="ISO 3166-1 alpha-2 of the purchase")
    event.add_argument(
        "--refunded-period-end",
        metavar="TIME",
        help="for refunded and refund_reversed (required there): the end of the period the "
        "refunded transaction paid for, exactly as recorded (ISO 8601 with zone; the "
        "'period ends' a write printed, or the store's expiresDate / expiryTime). The "
        "current period's end takes access away; a past one changes nothing",
    )
    event.set_defaults(run=record_event)

    new_grant = _write_command(
        commands,
        "grant",
        "grant USER a feature or a plan",
        "Grants a feature (with an amount for a quota feature) or a whole plan, from now, "
        "for --days or without end.",
        "entitlements grant newbie --feature audiobook_hours --quota 30 --days 14 "
        "--request-id promo-newbie-1",
        "entitlements grant newbie --plan premium_individual --kind promotional --days 30",
    )
    target = new_grant.add_mutually_exclusive_group(required=True)
    target.add_argument("--feature", help="a feature id of the catalog")
    target.add_argument("--plan", help="a plan id of the catalog (all its features)")
    new_grant.add_argument(
        "--kind", choices=sorted(GRANT_KINDS), default="support", help="why (default support)"
    )
    new_grant.add_argument(
        "--quota", type=int, default=0, metavar="N", help="amount for a quota feature"
    )
    new_grant.add_argument(
        "--days", type=float, metavar="N", help="ends in N days (default: never)"
    )
    new_grant.set_defaults(run=grant)

    revocation = _write_command(
        commands,
        "revoke",
        "revoke one of USER's grants",
        "Revokes a grant from now on. Revoking a revoked grant changes nothing.",
        "entitlements revoke newbie grant-0b6f...",
    )
    revocation.add_argument("grant_id", metavar="GRANT", help="the grant id a grant printed")
    revocation.set_defaults(run=revoke)

    redeem = _write_command(
        commands,
        "redeem-offer",
        "redeem OFFER for USER (starts the trial or offer)",
        "Redeems an offer the user may see (see get-offers): starts its trial or discounted "
        "period as a new subscription. Atomic: two redemptions of a one-per-lifetime offer "
        "cannot both win.",
        "entitlements redeem-offer demo-free premium-individual-trial-1m --market US "
        "--platform ios --store app_store",
    )
    redeem.add_argument("offer_id", metavar="OFFER", help="an offer id of the catalog")
    redeem.add_argument("--market", required=True, metavar="COUNTRY", help="ISO 3166-1 alpha-2")
    redeem.add_argument(
        "--platform", required=True, choices=sorted(PLATFORMS), help="where it is redeemed"
    )
    redeem.add_argument("--store", required=True, choices=sorted(STORES), help="who bills it")
    redeem.add_argument("--subscription", help="subscription id (default: a new one)")
    redeem.set_defaults(run=redeem_offer)
    _add_household_commands(commands)
    _add_student_commands(commands)


_MANAGER = ("MANAGER", "the user id of the household's manager")


def _add_household_commands(commands: Commands) -> None:
    household = _write_command(
        commands,
        "create-household",
        "create a household that MANAGER's family plan shares",
        "Creates a household managed by MANAGER, sharing the plan of MANAGER's current "
        "subscription, which must be a plan for several accounts (premium_duo, "
        "premium_family). Prints the household id that add-household-member takes; the id "
        "derives from MANAGER and --request-id, so the same command with the same id "
        "answers the same household.",
        "entitlements create-household parent-1",
        "entitlements create-household parent-1 --request-id household-parent-1",
        user=_MANAGER,
    )
    household.set_defaults(run=create_household)

    for name, summary, description, example, run in (
        (
            "add-household-member",
            "add MEMBER to MANAGER's household",
            "Adds MEMBER to the household: a seat on the manager's roster (the plan's size "
            "counts the manager), then MEMBER's membership; MEMBER's decisions then follow "
            "the manager's subscription. Adding a current member changes nothing; a member "
            "of another household, or one who left one lately (cooldown), is refused. "
            "Remembers both the member's and the manager's consistency token.",
            "entitlements add-household-member parent-1 HOUSEHOLD kid-1",
            add_household_member,
        ),
        (
            "remove-household-member",
            "remove MEMBER from MANAGER's household",
            "Removes MEMBER from the household: MEMBER loses household access, then the seat "
            "is freed. Removing someone who is not a member changes nothing. Remembers both "
            "the member's and the manager's consistency token.",
            "entitlements remove-household-member parent-1 HOUSEHOLD kid-1",
            remove_household_member,
        ),
    ):
        membership = _write_command(
            commands,
            name,
            summary,
            description,
            example,
            f"{example} --request-id {name}-kid-1      # a retry completes it",
            user=_MANAGER,
        )
        membership.add_argument(
            "household_id", metavar="HOUSEHOLD", help="the household id create-household printed"
        )
        membership.add_argument("member_id", metavar="MEMBER", help="the member's user id")
        membership.set_defaults(run=run)


def _add_student_commands(commands: Commands) -> None:
    verification = _write_command(
        commands,
        "verify-student",
        "record that USER is a verified student",
        "Records that the verification provider confirmed USER as a student until a time: "
        "the student offers become eligible (get-offers), and a student plan entitles "
        "only while it lasts. Replaces an earlier verification.",
        "entitlements verify-student newbie --days 365 --provider-reference sheerid-4711",
        "entitlements verify-student newbie --until 2027-06-30 --provider-reference "
        "sheerid-4711 --request-id verify-newbie-2026",
    )
    until = verification.add_mutually_exclusive_group(required=True)
    until.add_argument(
        "--until",
        metavar="DATE",
        help="verified through this day (YYYY-MM-DD, UTC) or until this ISO 8601 time with zone",
    )
    until.add_argument(
        "--days",
        type=_positive(float),
        metavar="N",
        help="verified for N days from now (with --request-id, prefer --until: a repeat "
        "later sends another time and is refused as a different request)",
    )
    verification.add_argument(
        "--provider-reference",
        required=True,
        metavar="REF",
        help="the verification provider's reference for the check (kept in the history)",
    )
    verification.set_defaults(run=verify_student)

    revocation = _write_command(
        commands,
        "revoke-student",
        "end USER's student verification now",
        "Revokes USER's student verification at once: student offers stop being eligible "
        "and a student plan stops entitling. Revoking when there is none changes nothing.",
        "entitlements revoke-student newbie",
    )
    revocation.set_defaults(run=revoke_student)


def _add_support_commands(commands: Commands) -> None:
    user_history = _command(
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
