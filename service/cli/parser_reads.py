"""The read commands' command lines: get-entitlement, list-entitlements,
batch-get-entitlements, get-offers and watch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.cli.choices import PLATFORMS
from service.cli.parser_flags import add_connection_arguments, command, positive, read_command
from service.cli.rpc_commands import (
    batch_get_entitlements,
    get_entitlement,
    get_offers,
    list_entitlements,
)
from service.cli.watch import watch
from service.domain.validation import MAX_BATCH_QUERIES
from service.grpc_api.auth import Role

if TYPE_CHECKING:
    from service.cli.parser_flags import Commands


def add_read_commands(commands: Commands) -> None:
    _get_entitlement(commands)
    _list_entitlements(commands)
    _batch_get_entitlements(commands)
    _get_offers(commands)
    _watch(commands)


def _get_entitlement(commands: Commands) -> None:
    get = read_command(
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


def _list_entitlements(commands: Commands) -> None:
    listing = read_command(
        commands,
        "list-entitlements",
        "every feature of the catalog for USER",
        "Decides every feature of the server's catalog for one user, in catalog order.",
        "entitlements list-entitlements demo-family-member",
        "entitlements list-entitlements demo-grace --json",
    )
    listing.add_argument("user_id", metavar="USER", help="the user id")
    listing.set_defaults(run=list_entitlements)


def _batch_get_entitlements(commands: Commands) -> None:
    batch = read_command(
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


def _get_offers(commands: Commands) -> None:
    offers = read_command(
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


def _watch(commands: Commands) -> None:
    watching = command(
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
        type=positive(int),
        metavar="N",
        help="end after N messages, the first included (default: no limit)",
    )
    watching.add_argument(
        "--seconds",
        type=positive(float),
        metavar="S",
        help="end after S seconds (default: no limit)",
    )
    watching.set_defaults(run=watch)
