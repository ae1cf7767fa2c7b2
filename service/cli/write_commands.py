"""The commands that call a server to write: record-event, grant, revoke, redeem-offer, the
household and the student verification writes.

Each remembers the consistency tokens its answer carries (service.cli.remembered) and
prints the command that reads the write back, which then passes the token by itself."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, TypeVar

import grpc
from google.protobuf.message import Message

from entitlements.v1 import subscription_event_service_pb2 as events_pb2
from entitlements.v1 import subscription_event_service_pb2_grpc as events_pb2_grpc
from service.cli.call import build, invoke, print_json
from service.cli.choices import EVENT_TYPES, GRANT_KINDS, PLATFORMS, STORES
from service.cli.locations import find_data_dir
from service.cli.printers import (
    format_time,
    print_event_answer,
    print_grant,
    print_subscription,
    print_written,
)
from service.cli.remembered import RememberedTokens
from service.cli.rpc_commands import command_line, parse_time
from service.grpc_api.convert import timestamp

if TYPE_CHECKING:
    from service.cli.call import Method

Request = TypeVar("Request", bound=Message)
Response = TypeVar("Response", bound=Message)


def record_event(args: argparse.Namespace) -> int:
    def request() -> events_pb2.RecordSubscriptionEventRequest:
        # Whole seconds: the period end printed is then the exact one a later REFUNDED
        # event names with --refunded-period-end.
        occurred = (
            parse_time(args.occurred_at, "--occurred-at")
            if args.occurred_at
            else _now().replace(microsecond=0)
        )
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
        if args.refunded_period_end:
            message.refunded_period_end.CopyFrom(
                timestamp(parse_time(args.refunded_period_end, "--refunded-period-end"))
            )
        return message

    def show(
        request: events_pb2.RecordSubscriptionEventRequest,
        response: events_pb2.RecordSubscriptionEventResponse,
        read_back: str,
        remembered: bool,
    ) -> None:
        print_event_answer(request, response, read_back, remembered)

    return _write(
        args,
        lambda channel: _events(channel).RecordSubscriptionEvent,
        request,
        show,
        _read_back(args, "list-entitlements"),
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
        _: events_pb2.GrantEntitlementRequest,
        response: events_pb2.GrantEntitlementResponse,
        read_back: str,
        remembered: bool,
    ) -> None:
        print_written("granted", response.consistency_token, read_back, remembered)
        print_grant(response.grant)

    read_back = (
        _read_back(args, "get-entitlement", args.feature)
        if args.feature
        else _read_back(args, "list-entitlements")
    )
    return _write(args, lambda channel: _events(channel).GrantEntitlement, request, show, read_back)


def revoke(args: argparse.Namespace) -> int:
    def show(
        _: events_pb2.RevokeEntitlementRequest,
        response: events_pb2.RevokeEntitlementResponse,
        read_back: str,
        remembered: bool,
    ) -> None:
        print_written("revoked", response.consistency_token, read_back, remembered)
        print_grant(response.grant)

    return _write(
        args,
        lambda channel: _events(channel).RevokeEntitlement,
        lambda: events_pb2.RevokeEntitlementRequest(
            request_id=_request_id(args), user_id=args.user_id, grant_id=args.grant_id
        ),
        show,
        _read_back(args, "list-entitlements"),
    )


def redeem_offer(args: argparse.Namespace) -> int:
    def show(
        request: events_pb2.RedeemOfferRequest,
        response: events_pb2.RedeemOfferResponse,
        read_back: str,
        remembered: bool,
    ) -> None:
        print_written(
            f"redeemed {request.offer_id}", response.consistency_token, read_back, remembered
        )
        print_subscription(response.subscription)

    return _write(
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
        _read_back(args, "list-entitlements"),
    )


def create_household(args: argparse.Namespace) -> int:
    def show(
        _: events_pb2.CreateHouseholdRequest,
        response: events_pb2.CreateHouseholdResponse,
        read_back: str,
        remembered: bool,
    ) -> None:
        print_written(
            f"created household {response.household_id} ({response.plan_id}, up to "
            f"{response.household_size} accounts with the manager)",
            response.consistency_token,
            read_back,
            remembered,
        )
        add = command_line(
            args, "add-household-member", args.user_id, response.household_id, "MEMBER"
        )
        print(f"  add a member: {add}")

    return _write(
        args,
        lambda channel: _events(channel).CreateHousehold,
        lambda: events_pb2.CreateHouseholdRequest(
            request_id=_request_id(args), manager_user_id=args.user_id
        ),
        show,
        _read_back(args, "list-entitlements"),
    )


def add_household_member(args: argparse.Namespace) -> int:
    def show(
        request: events_pb2.AddHouseholdMemberRequest,
        response: events_pb2.AddHouseholdMemberResponse,
        read_back: str,
        remembered: bool,
    ) -> None:
        print_written(
            f"{request.member_user_id} is in household {response.household_id}",
            response.consistency_token,
            read_back,
            remembered,
        )
        print(f"  the manager's consistency token: {response.manager_consistency_token}")

    return _write(
        args,
        lambda channel: _events(channel).AddHouseholdMember,
        lambda: events_pb2.AddHouseholdMemberRequest(
            request_id=_request_id(args),
            manager_user_id=args.user_id,
            household_id=args.household_id,
            member_user_id=args.member_id,
        ),
        show,
        _read_back(args, "list-entitlements", user_id=args.member_id),
        _household_tokens(args),
    )


def remove_household_member(args: argparse.Namespace) -> int:
    def show(
        request: events_pb2.RemoveHouseholdMemberRequest,
        response: events_pb2.RemoveHouseholdMemberResponse,
        read_back: str,
        remembered: bool,
    ) -> None:
        print_written(
            f"{request.member_user_id} is not in household {response.household_id}",
            response.consistency_token,
            read_back,
            remembered,
        )
        print(f"  the manager's consistency token: {response.manager_consistency_token}")

    return _write(
        args,
        lambda channel: _events(channel).RemoveHouseholdMember,
        lambda: events_pb2.RemoveHouseholdMemberRequest(
            request_id=_request_id(args),
            manager_user_id=args.user_id,
            household_id=args.household_id,
            member_user_id=args.member_id,
        ),
        show,
        _read_back(args, "list-entitlements", user_id=args.member_id),
        _household_tokens(args),
    )


def _household_tokens(
    args: argparse.Namespace,
) -> Callable[
    [events_pb2.AddHouseholdMemberResponse | events_pb2.RemoveHouseholdMemberResponse],
    list[tuple[str, str]],
]:
    """A membership write returns two tokens: the member's and the manager's (roster)."""
    return lambda response: [
        (args.member_id, response.consistency_token),
        (args.user_id, response.manager_consistency_token),
    ]


def verify_student(args: argparse.Namespace) -> int:
    def request() -> events_pb2.RecordStudentVerificationRequest:
        if args.until:
            until = _end_of(args.until)
        else:
            # Relative to now, so a repeat with the same --request-id sends another time
            # (ALREADY_EXISTS): --until is the form that repeats exactly.
            until = _now().replace(microsecond=0) + timedelta(days=args.days)
        return events_pb2.RecordStudentVerificationRequest(
            request_id=_request_id(args),
            user_id=args.user_id,
            verified_until=timestamp(until),
            provider_reference=args.provider_reference,
        )

    def show(
        _: events_pb2.RecordStudentVerificationRequest,
        response: events_pb2.RecordStudentVerificationResponse,
        read_back: str,
        remembered: bool,
    ) -> None:
        until = format_time(response.verified_until)
        print_written(
            f"verified student until {until}", response.consistency_token, read_back, remembered
        )

    return _write(
        args,
        lambda channel: _events(channel).RecordStudentVerification,
        request,
        show,
        _read_back(args, "get-offers", "--market", "US", "--platform", "web"),
    )


def _end_of(text: str) -> datetime:
    """--until: a date means through that day (UTC), else an ISO 8601 time with zone."""
    if len(text) == len("2027-06-30"):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            pass
        else:
            return datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)
    return parse_time(text, "--until")


def revoke_student(args: argparse.Namespace) -> int:
    def show(
        _: events_pb2.RevokeStudentVerificationRequest,
        response: events_pb2.RevokeStudentVerificationResponse,
        read_back: str,
        remembered: bool,
    ) -> None:
        print_written(
            "student verification revoked", response.consistency_token, read_back, remembered
        )

    return _write(
        args,
        lambda channel: _events(channel).RevokeStudentVerification,
        lambda: events_pb2.RevokeStudentVerificationRequest(
            request_id=_request_id(args), user_id=args.user_id
        ),
        show,
        _read_back(args, "list-entitlements"),
    )


def _write(
    args: argparse.Namespace,
    method: Method[Request, Response],
    request: Callable[[], Request],
    show: Callable[[Request, Response, str, bool], None],
    read_back: str,
    tokens: Callable[[Response], Sequence[tuple[str, str]]] | None = None,
) -> int:
    """Calls the write, remembers its consistency tokens (data folder), and prints the
    answer with the command that reads it back. `tokens(response)` names each user whose
    token the write returned with that token; by default USER's, consistency_token."""
    message = build(request)
    response = invoke(args, method, message)
    if response is None:
        return 1
    written = (
        tokens(response)
        if tokens is not None
        else [(args.user_id, str(getattr(response, "consistency_token", "")))]
    )
    remembered_tokens = RememberedTokens(find_data_dir())
    remembered = all(
        [remembered_tokens.remember(args.target, user_id, token) for user_id, token in written]
    )
    if args.json:
        print_json(response)
    else:
        show(message, response, read_back, remembered)
    return 0


def _read_back(
    args: argparse.Namespace, command: str, *operands: str, user_id: str | None = None
) -> str:
    """The command line reading USER (or `user_id`) back from the same server."""
    return command_line(args, command, user_id or args.user_id, *operands)


def _events(channel: grpc.Channel) -> events_pb2_grpc.SubscriptionEventServiceStub:
    return events_pb2_grpc.SubscriptionEventServiceStub(channel)


def _request_id(args: argparse.Namespace) -> str:
    return str(args.request_id or uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)
