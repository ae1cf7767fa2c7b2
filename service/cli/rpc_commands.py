"""The commands that call a server: the reads (get-entitlement, list-entitlements,
get-offers) and the writes (record-event, grant, revoke, redeem-offer)."""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime, timedelta

import grpc

from entitlements.v1 import (
    common_pb2,
    entitlement_service_pb2,
    entitlement_service_pb2_grpc,
    offer_service_pb2,
    offer_service_pb2_grpc,
)
from entitlements.v1 import subscription_event_service_pb2 as events_pb2
from entitlements.v1 import subscription_event_service_pb2_grpc as events_pb2_grpc
from service.cli.call import call
from service.cli.choices import EVENT_TYPES, GRANT_KINDS, PLATFORMS, STORES
from service.cli.errors import UsageError
from service.cli.printers import (
    print_entitlement_answer,
    print_entitlement_list,
    print_event_answer,
    print_grant,
    print_offers,
    print_subscription,
    print_written,
)
from service.grpc_api.convert import timestamp

# -- reads -------------------------------------------------------------------------------


def get_entitlement(args: argparse.Namespace) -> int:
    return call(
        args,
        lambda channel: entitlement_service_pb2_grpc.EntitlementServiceStub(channel).GetEntitlement,
        lambda: entitlement_service_pb2.GetEntitlementRequest(
            user_id=args.user_id, feature_id=args.feature_id, consistency=_consistency(args)
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
            user_id=args.user_id, consistency=_consistency(args)
        ),
        lambda _, response: print_entitlement_list(response),
    )


def get_offers(args: argparse.Namespace) -> int:
    return call(
        args,
        lambda channel: offer_service_pb2_grpc.OfferServiceStub(channel).GetOffers,
        lambda: offer_service_pb2.GetOffersRequest(
            user_id=args.user_id,
            market=args.market,
            platform=PLATFORMS[args.platform],
            include_ineligible=args.include_ineligible,
            consistency=_consistency(args),
        ),
        lambda request, response: print_offers(request, response, args.platform),
    )


def _consistency(args: argparse.Namespace) -> common_pb2.ReadConsistency:
    return common_pb2.ReadConsistency(consistency_token=args.token, full_consistency=args.fresh)


# -- writes ------------------------------------------------------------------------------


def record_event(args: argparse.Namespace) -> int:
    def request() -> events_pb2.RecordSubscriptionEventRequest:
        occurred = datetime.fromisoformat(args.occurred_at) if args.occurred_at else _now()
        if occurred.tzinfo is None:
            raise UsageError("--occurred-at needs a time zone, e.g. 2026-11-26T10:00:00Z")
        message = events_pb2.RecordSubscriptionEventRequest(
            event_id=_request_id(args),
            user_id=args.user_id,
            subscription_id=args.subscription,
            store=STORES[args.store],
            event_type=EVENT_TYPES[args.event_type],
            occurred_at=timestamp(occurred),
            plan_id=args.plan or "",
            offer_id=args.offer or "",
            market=args.market or "",
        )
        if args.period_days is not None:
            message.current_period_end.CopyFrom(
                timestamp(occurred + timedelta(days=args.period_days))
            )
        if args.grace_days is not None:
            message.grace_period_end.CopyFrom(timestamp(occurred + timedelta(days=args.grace_days)))
        return message

    return call(
        args,
        lambda channel: _events(channel).RecordSubscriptionEvent,
        request,
        print_event_answer,
    )


def grant(args: argparse.Namespace) -> int:
    def request() -> events_pb2.GrantEntitlementRequest:
        # Starting when recorded, for a duration: the same command repeated with the same
        # --request-id sends the same request, so a retry replays the first answer.
        message = events_pb2.GrantEntitlementRequest(
            request_id=_request_id(args),
            user_id=args.user_id,
            grant=events_pb2.Grant(kind=GRANT_KINDS[args.kind], quota_value=args.quota),
        )
        if args.feature:
            message.grant.feature_id = args.feature
        else:
            message.grant.plan_id = args.plan
        if args.days is not None:
            message.duration.FromTimedelta(timedelta(days=args.days))
        return message

    def show(
        _: events_pb2.GrantEntitlementRequest, response: events_pb2.GrantEntitlementResponse
    ) -> None:
        print_written("granted", response.consistency_token)
        print_grant(response.grant)

    return call(args, lambda channel: _events(channel).GrantEntitlement, request, show)


def revoke(args: argparse.Namespace) -> int:
    def show(
        _: events_pb2.RevokeEntitlementRequest, response: events_pb2.RevokeEntitlementResponse
    ) -> None:
        print_written("revoked", response.consistency_token)
        print_grant(response.grant)

    return call(
        args,
        lambda channel: _events(channel).RevokeEntitlement,
        lambda: events_pb2.RevokeEntitlementRequest(
            request_id=_request_id(args), user_id=args.user_id, grant_id=args.grant_id
        ),
        show,
    )


def redeem_offer(args: argparse.Namespace) -> int:
    def show(
        request: events_pb2.RedeemOfferRequest, response: events_pb2.RedeemOfferResponse
    ) -> None:
        print_written(f"redeemed {request.offer_id}", response.consistency_token)
        print_subscription(response.subscription)

    return call(
        args,
        lambda channel: _events(channel).RedeemOffer,
        lambda: events_pb2.RedeemOfferRequest(
            request_id=_request_id(args),
            user_id=args.user_id,
            offer_id=args.offer_id,
            market=args.market,
            platform=PLATFORMS[args.platform],
            store=STORES[args.store],
            subscription_id=args.subscription or f"sub-{uuid.uuid4()}",
        ),
        show,
    )


def _events(channel: grpc.Channel) -> events_pb2_grpc.SubscriptionEventServiceStub:
    return events_pb2_grpc.SubscriptionEventServiceStub(channel)


def _request_id(args: argparse.Namespace) -> str:
    return str(args.request_id or uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)
