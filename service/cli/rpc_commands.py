"""The commands that call a server to read: get-entitlement, list-entitlements,
batch-get-entitlements, get-offers, and support's history (AdminService); the writes are
service.cli.write_commands, `watch` streams (service.cli.watch).

Read-your-writes: a write remembers its consistency token for its user (service.cli.
remembered) and prints the command that reads it back; a later read of that user through
the same server address passes the token unless --consistency-token or --fresh is given."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TextIO

from entitlements.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    common_pb2,
    entitlement_service_pb2,
    entitlement_service_pb2_grpc,
    offer_service_pb2,
    offer_service_pb2_grpc,
)
from service.cli.call import call, invoke, print_json
from service.cli.choices import PLATFORMS
from service.cli.errors import UsageError
from service.cli.locations import find_data_dir
from service.cli.printers import (
    print_entitlement_answer,
    print_entitlement_list,
    print_history,
    print_offers,
)
from service.cli.remembered import RememberedTokens
from service.domain.validation import MAX_BATCH_QUERIES

DEFAULT_TARGET = "127.0.0.1:50051"

# -- reads -------------------------------------------------------------------------------


def get_entitlement(args: argparse.Namespace) -> int:
    return call(
        args,
        lambda channel: entitlement_service_pb2_grpc.EntitlementServiceStub(channel).GetEntitlement,
        lambda: entitlement_service_pb2.GetEntitlementRequest(
            user_id=args.user_id,
            feature_id=args.feature_id,
            consistency=_consistency(args, [args.user_id]),
        ),
        lambda _, response: print_entitlement_answer(response),
    )


def list_entitlements(args: argparse.Namespace) -> int:
    return call(
        args,
        lambda channel: (
            entitlement_service_pb2_grpc.EntitlementServiceStub(channel).ListEntitlements
        ),
        lambda: entitlement_service_pb2.ListEntitlementsRequest(
            user_id=args.user_id, consistency=_consistency(args, [args.user_id])
        ),
        lambda _, response: print_entitlement_list(response),
    )


def batch_get_entitlements(args: argparse.Namespace, stdin: TextIO = sys.stdin) -> int:
    """Asks the pairs in calls of at most MAX_BATCH_QUERIES; prints once all answered."""
    pairs = parse_pairs(args.pairs, stdin)
    merged = entitlement_service_pb2.BatchGetEntitlementsResponse()
    for start in range(0, len(pairs), MAX_BATCH_QUERIES):
        chunk = pairs[start : start + MAX_BATCH_QUERIES]
        request = entitlement_service_pb2.BatchGetEntitlementsRequest(
            queries=[
                entitlement_service_pb2.EntitlementQuery(user_id=user_id, feature_id=feature_id)
                for user_id, feature_id in chunk
            ],
            consistency=_consistency(args, [user_id for user_id, _ in chunk]),
        )
        response = invoke(
            args,
            lambda channel: (
                entitlement_service_pb2_grpc.EntitlementServiceStub(channel).BatchGetEntitlements
            ),
            request,
        )
        if response is None:
            if len(pairs) > MAX_BATCH_QUERIES:
                print(
                    f"  (in the call asking pairs {start + 1} to {start + len(chunk)}: "
                    f"queries[i] is pair {start + 1}+i)",
                    file=sys.stderr,
                )
            return 1
        merged.entitlements.extend(response.entitlements)
        merged.catalog_version = response.catalog_version
        merged.stale = merged.stale or response.stale
    if args.json:
        print_json(merged)
    else:
        print_entitlement_list(merged)
    return 0


def parse_pairs(values: Sequence[str], stdin: TextIO) -> list[tuple[str, str]]:
    """USER:FEATURE arguments, or with none (or `-`) lines of stdin, each `USER:FEATURE` or
    `USER FEATURE` (blank lines and # comments skipped). The last colon splits a pair:
    feature ids have none, user ids may."""
    from_stdin = not values or list(values) == ["-"]
    lines: Iterable[str] = stdin if from_stdin else values
    pairs = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if from_stdin and (not line or line.startswith("#")):
            continue
        fields = line.split()
        if len(fields) == 2:
            user_id, feature_id = fields
        else:
            user_id, _, feature_id = line.rpartition(":")
        if not user_id or not feature_id:
            where = f"line {number} of stdin" if from_stdin else f"argument {raw!r}"
            raise UsageError(f"{where}: expected USER:FEATURE")
        pairs.append((user_id, feature_id))
    if not pairs:
        raise UsageError("no USER:FEATURE pairs (as arguments, or one a line on stdin)")
    return pairs


def get_offers(args: argparse.Namespace) -> int:
    return call(
        args,
        lambda channel: offer_service_pb2_grpc.OfferServiceStub(channel).GetOffers,
        lambda: offer_service_pb2.GetOffersRequest(
            user_id=args.user_id,
            market=args.market,
            platform=PLATFORMS[args.platform],
            include_ineligible=args.include_ineligible,
            consistency=_consistency(args, [args.user_id]),
        ),
        lambda request, response: print_offers(request, response, args.platform),
    )


def _consistency(args: argparse.Namespace, user_ids: Sequence[str]) -> common_pb2.ReadConsistency:
    """--consistency-token and --fresh as given; else the remembered token of the last
    write to the user (one token per request: for a batch of several users with
    remembered tokens, a full-consistency read instead)."""
    if args.token or args.fresh:
        return common_pb2.ReadConsistency(consistency_token=args.token, full_consistency=args.fresh)
    remembered = RememberedTokens(find_data_dir())
    tokens = {u: t for u in dict.fromkeys(user_ids) if (t := remembered.get(args.target, u))}
    if len(tokens) > 1:
        return common_pb2.ReadConsistency(full_consistency=True)
    return common_pb2.ReadConsistency(consistency_token=next(iter(tokens.values()), ""))


def command_line(args: argparse.Namespace, command: str, *operands: str) -> str:
    """`entitlements COMMAND [--target T] OPERANDS...`, quoted for a shell."""
    words = ["entitlements", command]
    if args.target != DEFAULT_TARGET:
        words += ["--target", args.target]
    return shlex.join([*words, *operands])


def parse_time(text: str, flag: str) -> datetime:
    """An ISO 8601 time with its zone (a `Z` suffix is UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise UsageError(f"{flag}: {error}; e.g. 2026-11-26T10:00:00Z") from error
    if moment.tzinfo is None:
        raise UsageError(f"{flag} needs a time zone, e.g. 2026-11-26T10:00:00Z")
    return moment


# -- support -----------------------------------------------------------------------------


def history(args: argparse.Namespace) -> int:
    if args.storage is not None:
        raise UsageError(
            "history asks the server now (--target): it reads the store the server is "
            "configured with; --storage is no longer taken"
        )
    return call(
        args,
        lambda channel: admin_service_pb2_grpc.AdminServiceStub(channel).GetUserHistory,
        lambda: admin_service_pb2.GetUserHistoryRequest(
            user_id=args.user_id, max_entries=args.max_entries
        ),
        lambda _, response: print_history(response),
    )
