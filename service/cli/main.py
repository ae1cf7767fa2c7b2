"""The `entitlements` command: serve, seed demo users, and call the service by hand."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from entitlements.v1 import (
    common_pb2,
    entitlement_service_pb2,
    entitlement_service_pb2_grpc,
    offer_service_pb2,
    offer_service_pb2_grpc,
)
from entitlements.v1 import subscription_event_service_pb2 as events_pb2
from entitlements.v1 import subscription_event_service_pb2_grpc as events_pb2_grpc
from service.catalog.demo import seed_demo
from service.config import DEFAULT_DATA_DIR, DEFAULT_STORAGE_URL, ENV_PREFIX, Settings
from service.domain.catalog import CatalogError
from service.domain.events import EventType
from service.grpc_api.audit import configure_audit_logging
from service.grpc_api.auth import (
    Role,
    channel_credentials,
    ensure_dev_credentials,
    read_dev_tokens,
    with_bearer_token,
)
from storage.repository import StoreError
from storage.urls import UnsupportedStorageUrl, open_repository
from storage.urls import migrate as migrate_storage

DEFAULT_TARGET = "127.0.0.1:50051"
CREDENTIAL_ENV = "ENTITLEMENTS_CREDENTIAL"
PLATFORMS = {"web": 1, "ios": 2, "android": 3, "desktop": 4}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        result: int = args.run(args)
        return result
    except (CatalogError, UnsupportedStorageUrl, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        _print_rpc_error(exc)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="entitlements", description="Entitlement and offer service."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind, 0 for any (default 50051)")
    serve.add_argument("--storage", help=f"storage URL (default {DEFAULT_STORAGE_URL})")
    serve.add_argument("--catalog", help="catalog YAML file (default: the example catalog)")
    serve.add_argument(
        "--workers", type=int, help="worker processes sharing the port (default: one per core)"
    )
    serve.set_defaults(run=_serve)

    seed = commands.add_parser("seed-demo", help="write the demo users to the store")
    seed.add_argument("--storage", help=f"storage URL (default {DEFAULT_STORAGE_URL})")
    seed.set_defaults(run=_seed_demo)

    migrate = commands.add_parser(
        "migrate", help="apply the store's pending schema migrations (needed for spanner://)"
    )
    migrate.add_argument("--storage", help=f"storage URL (default {DEFAULT_STORAGE_URL})")
    migrate.set_defaults(run=_migrate)

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
    get.set_defaults(run=_get_entitlement)

    listing = client("list-entitlements", "every feature of the catalog for USER")
    listing.set_defaults(run=_list_entitlements)

    offers = client("get-offers", "offers USER may see")
    offers.add_argument("--market", required=True, help="ISO 3166-1 alpha-2, e.g. SE")
    offers.add_argument("--platform", required=True, choices=sorted(PLATFORMS))
    offers.add_argument(
        "--include-ineligible", action="store_true", help="also list excluded offers"
    )
    offers.set_defaults(run=_get_offers)
    _add_write_commands(commands)

    history = commands.add_parser(
        "history", help="USER's append-only history (support: why does USER have Premium?)"
    )
    history.add_argument("--storage", help=f"storage URL (default {DEFAULT_STORAGE_URL})")
    history.add_argument("user_id", metavar="USER")
    history.set_defaults(run=_history)
    return parser


EVENT_TYPES = sorted(t.name.lower() for t in EventType)
STORES = {"web": 1, "app_store": 2, "google_play": 3, "partner": 4}
GRANT_KINDS = {"promotional": 1, "support": 2, "partner": 3}


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
    event.add_argument("--type", required=True, choices=EVENT_TYPES, dest="event_type")
    event.add_argument("--subscription", required=True, help="the store's subscription id")
    event.add_argument("--store", required=True, choices=sorted(STORES))
    event.add_argument("--occurred-at", help="ISO 8601 time (default: now)")
    event.add_argument("--plan", help="plan after the event (purchased, trial, plan change)")
    event.add_argument("--period-days", type=float, help="current period ends in N days")
    event.add_argument("--grace-days", type=float, help="grace period ends in N days")
    event.add_argument("--offer", help="the offer the subscription started with")
    event.add_argument("--market", help="ISO 3166-1 alpha-2 country of the purchase")
    event.set_defaults(run=_record_event)

    grant = admin("grant", "grant USER a feature or a plan")
    target = grant.add_mutually_exclusive_group(required=True)
    target.add_argument("--feature")
    target.add_argument("--plan")
    grant.add_argument("--kind", choices=sorted(GRANT_KINDS), default="support")
    grant.add_argument("--quota", type=int, default=0, help="amount for a quota feature")
    grant.add_argument("--days", type=float, help="ends in N days (default: no end)")
    grant.set_defaults(run=_grant)

    revoke = admin("revoke", "revoke one of USER's grants")
    revoke.add_argument("grant_id", metavar="GRANT")
    revoke.set_defaults(run=_revoke)

    redeem = admin("redeem-offer", "redeem OFFER for USER (starts the trial or offer)")
    redeem.add_argument("offer_id", metavar="OFFER")
    redeem.add_argument("--market", required=True)
    redeem.add_argument("--platform", required=True, choices=sorted(PLATFORMS))
    redeem.add_argument("--store", required=True, choices=sorted(STORES))
    redeem.add_argument("--subscription", help="subscription id (default: a new one)")
    redeem.set_defaults(run=_redeem_offer)


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


def _credential(args: argparse.Namespace) -> str | None:
    if args.credential:
        return str(args.credential)
    if os.environ.get(CREDENTIAL_ENV):
        return os.environ[CREDENTIAL_ENV]
    data_dir = Path(os.environ.get(f"{ENV_PREFIX}DATA_DIR") or DEFAULT_DATA_DIR)
    tokens = read_dev_tokens(data_dir)
    if tokens is None:
        return None
    return tokens.get(args.credential_role) or tokens.get(Role.ADMIN)


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel to --target (TLS with --tls-ca or --tls-cert) sending the credential."""
    if args.tls_ca or args.tls_cert or args.tls_key:
        channel = grpc.secure_channel(
            args.target, channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)
        )
    else:
        channel = grpc.insecure_channel(args.target)
    token = _credential(args)
    return with_bearer_token(channel, token) if token else channel


def _bootstrap_dev_credentials(settings: Settings) -> Settings:
    """No credentials_file configured: use (and the first time generate) development
    credentials in the data folder, so that `make run` and the CLI work out of the box."""
    dev = ensure_dev_credentials(settings.data_dir)
    if dev.created:
        print(
            "entitlements: no credentials_file configured; generated development credentials "
            "(shown this once):\n"
            f"  admin token (write RPCs):  {dev.tokens[Role.ADMIN]}\n"
            f"  service token (read RPCs): {dev.tokens[Role.SERVICE]}\n"
            f"  kept in {dev.tokens_file} (mode 0600; the CLI reads them from there), "
            f"digests in {dev.credentials_file}",
            flush=True,
        )
    else:
        print(
            f"entitlements: using the development credentials of {dev.credentials_file} "
            f"(tokens in {dev.tokens_file})",
            flush=True,
        )
    if settings.host not in {"127.0.0.1", "localhost", "::1"}:
        print(
            f"entitlements: warning: development credentials on {settings.host}; set "
            f"{ENV_PREFIX}CREDENTIALS_FILE for anything but local development",
            flush=True,
        )
    return dataclasses.replace(settings, credentials_file=dev.credentials_file)


def _serve(args: argparse.Namespace) -> int:
    from service.grpc_api import workers

    settings = Settings.load(
        host=args.host,
        port=args.port,
        storage_url=args.storage,
        catalog_path=args.catalog,
        workers=args.workers,
    )
    if settings.credentials_file is None:
        settings = _bootstrap_dev_credentials(settings)
    configure_audit_logging(settings.audit_log_file)

    def announce(message: str) -> None:
        print(f"entitlements: {message}", flush=True)

    return workers.serve(settings, announce)


def _migrate(args: argparse.Namespace) -> int:
    settings = Settings.load(storage_url=args.storage)
    applied = migrate_storage(settings.storage_url)
    if applied is None:
        print(f"{settings.storage_url}: schema up to date (this store migrates itself on open)")
    elif applied:
        print(f"{settings.storage_url}: applied {', '.join(applied)}")
    else:
        print(f"{settings.storage_url}: schema up to date, nothing to apply")
    return 0


def _seed_demo(args: argparse.Namespace) -> int:
    settings = Settings.load(storage_url=args.storage)
    repository = open_repository(settings.storage_url)
    try:
        user_ids = seed_demo(repository, datetime.now(UTC))
    finally:
        repository.close()
    print(f"seeded {len(user_ids)} demo users into {settings.storage_url}:")
    for user_id in user_ids:
        print(f"  {user_id}")
    return 0


def _timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _request_id(args: argparse.Namespace) -> str:
    return str(args.request_id or uuid.uuid4())


def _print_written(kind: str, token: str) -> None:
    print(f"{kind}; consistency token: {token}")
    print("  (pass it to reads with --token to see this write from any server process)")


def _print_subscription(sub: events_pb2.Subscription) -> None:
    status = _enum(events_pb2.SubscriptionStatus, sub.status, "SUBSCRIPTION_STATUS_")
    store = _enum(common_pb2.Store, sub.store, "STORE_")
    line = f"  subscription {sub.subscription_id}: {status} on {sub.plan_id} via {store}"
    line += f", period ends {_time(sub.current_period_end)}"
    if sub.HasField("grace_period_end"):
        line += f", grace ends {_time(sub.grace_period_end)}"
    print(line + ("" if sub.auto_renew else ", not renewing"))


def _print_grant(grant: events_pb2.Grant) -> None:
    target = grant.feature_id or f"plan {grant.plan_id}"
    kind = _enum(events_pb2.GrantKind, grant.kind, "GRANT_KIND_")
    line = f"  grant {grant.grant_id}: {kind} grant of {target} from {_time(grant.starts_at)}"
    if grant.HasField("expires_at"):
        line += f" until {_time(grant.expires_at)}"
    if grant.HasField("revoked_at"):
        line += f", revoked {_time(grant.revoked_at)}"
    print(line)


def _record_event(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    occurred = datetime.fromisoformat(args.occurred_at) if args.occurred_at else now
    if occurred.tzinfo is None:
        raise ValueError("--occurred-at needs a time zone, e.g. 2026-11-26T10:00:00Z")
    request = events_pb2.RecordSubscriptionEventRequest(
        event_id=_request_id(args),
        user_id=args.user_id,
        subscription_id=args.subscription,
        store=STORES[args.store],  # type: ignore[arg-type]
        event_type=events_pb2.SubscriptionEventType.Value(
            f"SUBSCRIPTION_EVENT_TYPE_{args.event_type.upper()}"
        ),
        occurred_at=_timestamp(occurred),
        plan_id=args.plan or "",
        offer_id=args.offer or "",
        market=args.market or "",
    )
    if args.period_days is not None:
        request.current_period_end.CopyFrom(_timestamp(occurred + timedelta(days=args.period_days)))
    if args.grace_days is not None:
        request.grace_period_end.CopyFrom(_timestamp(occurred + timedelta(days=args.grace_days)))
    with open_channel(args) as channel:
        stub = events_pb2_grpc.SubscriptionEventServiceStub(channel)
        response = stub.RecordSubscriptionEvent(request, timeout=args.timeout)
    outcome = _enum(events_pb2.EventOutcome, response.outcome, "EVENT_OUTCOME_")
    _print_written(f"event {request.event_id}: {outcome}", response.consistency_token)
    _print_subscription(response.subscription)
    return 0


def _grant(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    grant = events_pb2.Grant(
        kind=GRANT_KINDS[args.kind],  # type: ignore[arg-type]
        quota_value=args.quota,
        starts_at=_timestamp(now),
    )
    if args.feature:
        grant.feature_id = args.feature
    else:
        grant.plan_id = args.plan
    if args.days is not None:
        grant.expires_at.CopyFrom(_timestamp(now + timedelta(days=args.days)))
    with open_channel(args) as channel:
        stub = events_pb2_grpc.SubscriptionEventServiceStub(channel)
        response = stub.GrantEntitlement(
            events_pb2.GrantEntitlementRequest(
                request_id=_request_id(args), user_id=args.user_id, grant=grant
            ),
            timeout=args.timeout,
        )
    _print_written("granted", response.consistency_token)
    _print_grant(response.grant)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    with open_channel(args) as channel:
        stub = events_pb2_grpc.SubscriptionEventServiceStub(channel)
        response = stub.RevokeEntitlement(
            events_pb2.RevokeEntitlementRequest(
                request_id=_request_id(args), user_id=args.user_id, grant_id=args.grant_id
            ),
            timeout=args.timeout,
        )
    _print_written("revoked", response.consistency_token)
    _print_grant(response.grant)
    return 0


def _redeem_offer(args: argparse.Namespace) -> int:
    with open_channel(args) as channel:
        stub = events_pb2_grpc.SubscriptionEventServiceStub(channel)
        response = stub.RedeemOffer(
            events_pb2.RedeemOfferRequest(
                request_id=_request_id(args),
                user_id=args.user_id,
                offer_id=args.offer_id,
                market=args.market,
                platform=PLATFORMS[args.platform],  # type: ignore[arg-type]
                store=STORES[args.store],  # type: ignore[arg-type]
                subscription_id=args.subscription or f"sub-{uuid.uuid4()}",
            ),
            timeout=args.timeout,
        )
    _print_written(f"redeemed {args.offer_id}", response.consistency_token)
    _print_subscription(response.subscription)
    return 0


def _history(args: argparse.Namespace) -> int:
    settings = Settings.load(storage_url=args.storage)
    repository = open_repository(settings.storage_url)
    try:
        state = repository.load(args.user_id).account
        entries = repository.history(args.user_id)
    finally:
        repository.close()
    print(f"history of {args.user_id} (version {state.version}), oldest first:")
    if not entries:
        print("  (nothing recorded)")
    for entry in entries:
        print(
            f"  v{entry.version} {entry.recorded_at.isoformat(timespec='seconds')} "
            f"{entry.kind} {entry.reference} (effective "
            f"{entry.effective_at.isoformat(timespec='seconds')}): {entry.summary}"
        )
    return 0


def _consistency(args: argparse.Namespace) -> common_pb2.ReadConsistency:
    return common_pb2.ReadConsistency(consistency_token=args.token, full_consistency=args.fresh)


def _get_entitlement(args: argparse.Namespace) -> int:
    with open_channel(args) as channel:
        stub = entitlement_service_pb2_grpc.EntitlementServiceStub(channel)
        response = stub.GetEntitlement(
            entitlement_service_pb2.GetEntitlementRequest(
                user_id=args.user_id, feature_id=args.feature_id, consistency=_consistency(args)
            ),
            timeout=args.timeout,
        )
    _print_entitlement(response.entitlement)
    print(f"  catalog: {response.catalog_version}")
    return 0


def _list_entitlements(args: argparse.Namespace) -> int:
    with open_channel(args) as channel:
        stub = entitlement_service_pb2_grpc.EntitlementServiceStub(channel)
        response = stub.ListEntitlements(
            entitlement_service_pb2.ListEntitlementsRequest(
                user_id=args.user_id, consistency=_consistency(args)
            ),
            timeout=args.timeout,
        )
    for entitlement in response.entitlements:
        _print_entitlement(entitlement)
    print(f"catalog: {response.catalog_version}")
    return 0


def _get_offers(args: argparse.Namespace) -> int:
    with open_channel(args) as channel:
        stub = offer_service_pb2_grpc.OfferServiceStub(channel)
        response = stub.GetOffers(
            offer_service_pb2.GetOffersRequest(
                user_id=args.user_id,
                market=args.market,
                platform=PLATFORMS[args.platform],  # type: ignore[arg-type]
                include_ineligible=args.include_ineligible,
                consistency=_consistency(args),
            ),
            timeout=args.timeout,
        )
    print(f"offers for {args.user_id} in {args.market} on {args.platform}:")
    if not response.offers:
        print("  (none)")
    for offer in response.offers:
        arm = (
            f", experiment {offer.experiment_id}/{offer.experiment_arm}"
            if offer.experiment_id
            else ""
        )
        print(
            f"  {offer.offer_id}: {_enum(offer_service_pb2.OfferKind, offer.kind, 'OFFER_KIND_')} "
            f"of {offer.plan_id} for {offer.duration_days} days at "
            f"{_money(offer.offer_price)} (then {_money(offer.regular_price)}/month){arm}"
        )
    if args.include_ineligible:
        print("not eligible:")
        for ineligible in response.ineligible_offers:
            reason = _enum(
                offer_service_pb2.IneligibilityReason, ineligible.reason, "INELIGIBILITY_REASON_"
            )
            print(f"  {ineligible.offer_id}: {reason} ({ineligible.detail})")
    if response.HasField("valid_until"):
        print(f"valid until {_time(response.valid_until)}")
    return 0


def _enum(enum_type: Any, value: int, prefix: str) -> str:
    name: str = enum_type.Name(value)
    return name.removeprefix(prefix).lower()


def _time(ts: Timestamp) -> str:
    return ts.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds")


# ISO 4217 currencies without minor units among those a catalog is likely to use.
_ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW", "CLP", "ISK", "VND", "HUF", "TWD"})


def _money(money: common_pb2.Money) -> str:
    if money.currency_code in _ZERO_DECIMAL_CURRENCIES:
        return f"{money.amount_minor} {money.currency_code}"
    return f"{money.amount_minor / 100:.2f} {money.currency_code}"


def _print_entitlement(e: entitlement_service_pb2.Entitlement) -> None:
    if e.granted:
        value = (
            f" = {e.quota_value}"
            if e.feature_kind == entitlement_service_pb2.FEATURE_KIND_QUOTA
            else ""
        )
        source = _enum(entitlement_service_pb2.SourceType, e.source.type, "SOURCE_TYPE_")
        if e.source.id:
            source += f" {e.source.id}"
        if e.source.store:
            source += f" via {_enum(common_pb2.Store, e.source.store, 'STORE_')}"
        state = _enum(entitlement_service_pb2.EntitlementState, e.state, "ENTITLEMENT_STATE_")
        plan = e.plan_id or "-"
        line = f"{e.user_id} {e.feature_id}: GRANTED{value} ({state}, plan {plan}, from {source})"
        if e.HasField("expires_at"):
            line += f", expires {_time(e.expires_at)}"
    else:
        reason = _enum(entitlement_service_pb2.DenialReason, e.denial_reason, "DENIAL_REASON_")
        line = f"{e.user_id} {e.feature_id}: DENIED ({reason})"
    if e.HasField("valid_until"):
        line += f"; valid until {_time(e.valid_until)}"
    print(line)


def _print_rpc_error(error: grpc.RpcError) -> None:
    if not isinstance(error, grpc.Call):
        print(f"error: RPC failed: {error}", file=sys.stderr)
        return
    status = rpc_status.from_call(error)
    if status is None or not status.details:
        print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
        if error.code() is grpc.StatusCode.UNAUTHENTICATED:
            print(
                f"  pass --credential TOKEN or set ${CREDENTIAL_ENV} (`entitlements serve` "
                f"prints development tokens and keeps them in {DEFAULT_DATA_DIR}/dev-tokens.json)",
                file=sys.stderr,
            )
        return
    lines = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            lines += [f"  {v.field}: {v.description}" for v in bad_request.field_violations]
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            lines += [f"  {v.type} ({v.subject}): {v.description}" for v in failure.violations]
    # The field violations repeat the message; other details complete it.
    print(f"error: {error.code().name}", file=sys.stderr)
    for line in lines or [f"  {error.details()}"]:
        print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
