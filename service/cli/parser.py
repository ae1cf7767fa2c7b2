"""The command line of `entitlements`: its subcommands, their flags, and the command each
runs (`args.run(args)`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from service.cli.call import CREDENTIAL_ENV
from service.cli.choices import EVENT_TYPES, GRANT_KINDS, PLATFORMS, STORES
from service.cli.rpc_commands import (
    get_entitlement,
    get_offers,
    grant,
    list_entitlements,
    record_event,
    redeem_offer,
    revoke,
)
from service.cli.store_commands import history, migrate, seed_demo, serve
from service.config import DEFAULT_DATA_DIR, DEFAULT_STORAGE_URL
from service.grpc_api.auth import Role

DEFAULT_TARGET = "127.0.0.1:50051"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="entitlements", description="Entitlement and offer service."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    server = commands.add_parser("serve", help="run the gRPC server")
    server.add_argument("--host", help="address to bind (default 127.0.0.1)")
    server.add_argument("--port", type=int, help="port to bind, 0 for any (default 50051)")
    server.add_argument("--storage", help=f"storage URL (default {DEFAULT_STORAGE_URL})")
    server.add_argument("--catalog", help="catalog YAML file (default: the example catalog)")
    server.add_argument(
        "--workers", type=int, help="worker processes sharing the port (default: one per core)"
    )
    server.set_defaults(run=serve)

    seed = commands.add_parser("seed-demo", help="write the demo users to the store")
    seed.add_argument("--storage", help=f"storage URL (default {DEFAULT_STORAGE_URL})")
    seed.set_defaults(run=seed_demo)

    migration = commands.add_parser(
        "migrate", help="apply the store's pending schema migrations (needed for spanner://)"
    )
    migration.add_argument("--storage", help=f"storage URL (default {DEFAULT_STORAGE_URL})")
    migration.set_defaults(run=migrate)

    _add_read_commands(commands)
    _add_write_commands(commands)

    user_history = commands.add_parser(
        "history", help="USER's append-only history (support: why does USER have Premium?)"
    )
    user_history.add_argument("--storage", help=f"storage URL (default {DEFAULT_STORAGE_URL})")
    user_history.add_argument("user_id", metavar="USER")
    user_history.set_defaults(run=history)
    return parser


def _add_read_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def client(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        add_connection_arguments(sub, Role.SERVICE)
        sub.add_argument("--token", default="", help="consistency token from a write")
        sub.add_argument("--fresh", action="store_true", help="bypass the server's cache")
        sub.add_argument("--timeout", type=float, default=5.0, help="deadline in seconds")
        sub.add_argument("user_id", metavar="USER")
        return sub

    get = client("get-entitlement", "may USER use FEATURE now?")
    get.add_argument("feature_id", metavar="FEATURE")
    get.set_defaults(run=get_entitlement)

    listing = client("list-entitlements", "every feature of the catalog for USER")
    listing.set_defaults(run=list_entitlements)

    offers = client("get-offers", "offers USER may see")
    offers.add_argument("--market", required=True, help="ISO 3166-1 alpha-2, e.g. SE")
    offers.add_argument("--platform", required=True, choices=sorted(PLATFORMS))
    offers.add_argument(
        "--include-ineligible", action="store_true", help="also list excluded offers"
    )
    offers.set_defaults(run=get_offers)


def _add_write_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def admin(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        add_connection_arguments(sub, Role.ADMIN)
        sub.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
        sub.add_argument(
            "--request-id", help="idempotency key (default: a new one, so no retry dedup)"
        )
        sub.add_argument("user_id", metavar="USER")
        return sub

    event = admin("record-event", "record a store or checkout event for USER")
    event.add_argument("--type", required=True, choices=sorted(EVENT_TYPES), dest="event_type")
    event.add_argument("--subscription", required=True, help="the store's subscription id")
    event.add_argument("--store", required=True, choices=sorted(STORES))
    event.add_argument("--occurred-at", help="ISO 8601 time (default: now)")
    event.add_argument("--plan", help="plan after the event (purchased, trial, plan change)")
    event.add_argument("--period-days", type=float, help="current period ends in N days")
    event.add_argument("--grace-days", type=float, help="grace period ends in N days")
    event.add_argument("--offer", help="the offer the subscription started with")
    event.add_argument("--market", help="ISO 3166-1 alpha-2 country of the purchase")
    event.set_defaults(run=record_event)

    new_grant = admin("grant", "grant USER a feature or a plan")
    target = new_grant.add_mutually_exclusive_group(required=True)
    target.add_argument("--feature")
    target.add_argument("--plan")
    new_grant.add_argument("--kind", choices=sorted(GRANT_KINDS), default="support")
    new_grant.add_argument("--quota", type=int, default=0, help="amount for a quota feature")
    new_grant.add_argument("--days", type=float, help="ends in N days (default: no end)")
    new_grant.set_defaults(run=grant)

    revocation = admin("revoke", "revoke one of USER's grants")
    revocation.add_argument("grant_id", metavar="GRANT")
    revocation.set_defaults(run=revoke)

    redeem = admin("redeem-offer", "redeem OFFER for USER (starts the trial or offer)")
    redeem.add_argument("offer_id", metavar="OFFER")
    redeem.add_argument("--market", required=True)
    redeem.add_argument("--platform", required=True, choices=sorted(PLATFORMS))
    redeem.add_argument("--store", required=True, choices=sorted(STORES))
    redeem.add_argument("--subscription", help="subscription id (default: a new one)")
    redeem.set_defaults(run=redeem_offer)


def add_connection_arguments(sub: argparse.ArgumentParser, role: Role) -> None:
    """--target, the credential and the TLS flags of a client subcommand. `role` picks the
    development token used when neither --credential nor $ENTITLEMENTS_CREDENTIAL is given
    (Role.ADMIN for the write commands)."""
    sub.add_argument(
        "--target",
        default=os.environ.get("ENTITLEMENTS_TARGET", DEFAULT_TARGET),
        help=f"server address (default {DEFAULT_TARGET} or $ENTITLEMENTS_TARGET)",
    )
    sub.add_argument(
        "--credential",
        metavar="TOKEN",
        help=f"bearer token (default ${CREDENTIAL_ENV}, else the {role.value} token of "
        f"the development credentials in {DEFAULT_DATA_DIR}/dev-tokens.json)",
    )
    sub.add_argument("--tls-ca", type=Path, metavar="PEM", help="use TLS, trusting this CA")
    sub.add_argument("--tls-cert", type=Path, metavar="PEM", help="client certificate (mTLS)")
    sub.add_argument("--tls-key", type=Path, metavar="PEM", help="client certificate's key")
    sub.set_defaults(credential_role=role)
