"""The one way the client commands call the service: build the request from the command
line, open a channel to --target (TLS and the bearer credential as the flags say), call with
--timeout, show the answer (as text, or with --json as JSON); a failed call is printed as
the error (exit status 1), with what helps: a server that cannot be reached, the known
features when a feature id is unknown, where credentials come from."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from entitlements.v1 import entitlement_service_pb2, entitlement_service_pb2_grpc
from service.cli.errors import UsageError
from service.cli.locations import DATA_DIR_ENV, find_data_dir
from service.config import CREDENTIAL_ENV, TARGET_ENV
from service.grpc_api.auth import (
    DEV_TOKENS_FILE,
    Role,
    channel_credentials,
    read_dev_tokens,
    with_bearer_token,
)
from service.service_config import channel_options

Request = TypeVar("Request", bound=Message)
Response = TypeVar("Response", bound=Message)
if TYPE_CHECKING:  # grpc's classes are generic for the type checker only
    Method: TypeAlias = Callable[[grpc.Channel], grpc.UnaryUnaryMultiCallable[Request, Response]]


def call(
    args: argparse.Namespace,
    method: Method[Request, Response],
    request: Callable[[], Request],
    show: Callable[[Request, Response], None],
) -> int:
    """`request()` builds the request from `args`; `method(channel)` is the stub's RPC.
    Returns the exit status: 0 once the answer is printed (`show`, or JSON with --json),
    1 when the call failed."""
    message = build(request)
    response = invoke(args, method, message)
    if response is None:
        return 1
    if getattr(args, "json", False):
        print_json(response)
    else:
        show(message, response)
    return 0


def build(request: Callable[[], Request]) -> Request:
    try:
        return request()
    except (ValueError, OverflowError) as error:
        # Command-line values protobuf or datetime cannot take: a number out of range,
        # text that is not UTF-8 (undecodable bytes in argv), a malformed time.
        raise UsageError(str(error)) from error


def invoke(
    args: argparse.Namespace, method: Method[Request, Response], message: Request
) -> Response | None:
    """The answer, or None once the failure is printed."""
    try:
        with open_channel(args) as channel:
            return method(channel)(message, timeout=args.timeout)
    except grpc.RpcError as error:
        report_rpc_error(args, error)
        return None


def print_json(message: Message) -> None:
    """The message as protobuf's JSON mapping, with the proto field names and every field
    (false, 0 and empty ones too, so a consumer need not know proto3's defaults)."""
    print(json.dumps(as_dict(message), indent=2, sort_keys=False))


def as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel to --target (TLS with --tls-ca or --tls-cert) sending the credential,
    with the service config shipped to client teams (service/service_config.py): calls
    refused UNAVAILABLE or RESOURCE_EXHAUSTED are retried with backoff."""
    options = channel_options()
    if args.tls_ca or args.tls_cert or args.tls_key:
        channel = grpc.secure_channel(
            args.target,
            channel_credentials(args.tls_ca, args.tls_cert, args.tls_key),
            options=options,
        )
    else:
        channel = grpc.insecure_channel(args.target, options=options)
    token = _credential(args)
    return with_bearer_token(channel, token) if token else channel


def _credential(args: argparse.Namespace) -> str | None:
    if args.credential:
        return str(args.credential)
    if os.environ.get(CREDENTIAL_ENV):
        return os.environ[CREDENTIAL_ENV]
    data_dir = find_data_dir()
    tokens = None if data_dir is None else read_dev_tokens(data_dir)
    if tokens is None:
        return None
    return tokens.get(args.credential_role) or tokens.get(Role.ADMIN)


# What gRPC says when nothing listens at the address (or the name does not resolve).
_UNREACHABLE = (
    "failed to connect to all addresses",
    "Connection refused",
    "DNS resolution failed",
    "Name or service not known",
)


def report_rpc_error(args: argparse.Namespace, error: grpc.RpcError) -> None:
    if (
        isinstance(error, grpc.Call)
        and error.code() is grpc.StatusCode.UNAVAILABLE
        and any(text in (error.details() or "") for text in _UNREACHABLE)
    ):
        print(
            f"error: cannot reach the server at {args.target} (is `make run` up?)\n"
            f"  (--target HOST:PORT or ${TARGET_ENV} names another server)",
            file=sys.stderr,
        )
        return
    violations = print_rpc_error(error)
    for line in _feature_hints(args, violations):
        print(line, file=sys.stderr)


def print_rpc_error(error: grpc.RpcError) -> list[error_details_pb2.BadRequest.FieldViolation]:
    """Prints the failure; returns its field violations (for hints)."""
    if not isinstance(error, grpc.Call):
        print(f"error: RPC failed: {error}", file=sys.stderr)
        return []
    status = rpc_status.from_call(error)
    if status is None or not status.details:
        print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
        if error.code() is grpc.StatusCode.UNAUTHENTICATED:
            print(_credential_hint(), file=sys.stderr)
        return []
    lines = []
    violations: list[error_details_pb2.BadRequest.FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations += bad_request.field_violations
            lines += [f"  {v.field}: {v.description}" for v in bad_request.field_violations]
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            lines += [f"  {v.type} ({v.subject}): {v.description}" for v in failure.violations]
    # The field violations repeat the message; other details complete it.
    print(f"error: {error.code().name}", file=sys.stderr)
    for line in lines or [f"  {error.details()}"]:
        print(line, file=sys.stderr)
    return violations


def _feature_hints(
    args: argparse.Namespace, violations: Sequence[error_details_pb2.BadRequest.FieldViolation]
) -> list[str]:
    """For each unknown feature id: the closest ids of the server's catalog, and the
    list. The catalog is the server's own (ListEntitlements answers one decision per
    feature of it), not a local file that may differ from what the server runs."""
    unknown = [
        v.description.split("'")[1]
        for v in violations
        if "feature_id" in v.field and v.description.startswith("unknown feature '")
    ]
    if not unknown:
        return []
    features = server_feature_ids(args)
    if not features:
        return []
    lines = []
    for feature_id in unknown:
        close = difflib.get_close_matches(feature_id, features, n=3, cutoff=0.5)
        if close:
            lines.append(f"  {feature_id!r}: did you mean {' or '.join(close)}?")
    lines.append(f"  the server's catalog has: {', '.join(features)}")
    return lines


def server_feature_ids(args: argparse.Namespace) -> list[str]:
    """The feature ids of the server's catalog; [] when they cannot be had."""
    user_id = getattr(args, "user_id", "") or "entitlements-cli"
    try:
        with open_channel(args) as channel:
            answer = entitlement_service_pb2_grpc.EntitlementServiceStub(channel).ListEntitlements(
                entitlement_service_pb2.ListEntitlementsRequest(user_id=user_id),
                timeout=args.timeout,
            )
    except grpc.RpcError:
        return []
    return [e.feature_id for e in answer.entitlements]


def _credential_hint() -> str:
    hint = (
        f"  pass --credential TOKEN (the bearer credential, not a consistency token) or set "
        f"${CREDENTIAL_ENV}"
    )
    data_dir = find_data_dir()
    if data_dir is None or not (data_dir / DEV_TOKENS_FILE).is_file():
        return (
            f"{hint}; no development tokens found (data/{DEV_TOKENS_FILE} in this folder or "
            f"one above, or ${DATA_DIR_ENV}): `entitlements serve` generates them"
        )
    return (
        f"{hint}; without them the development token of {data_dir / DEV_TOKENS_FILE} is "
        "sent (is that folder another server's?)"
    )
