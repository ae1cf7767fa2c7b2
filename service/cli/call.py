"""The one way the client commands call the service: build the request from the command
line, open a channel to --target (TLS and the bearer credential as the flags say), call with
--timeout, show the answer; a failed call is printed as the error (exit status 1)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from service.cli.errors import UsageError
from service.config import DEFAULT_DATA_DIR, ENV_PREFIX
from service.grpc_api.auth import Role, channel_credentials, read_dev_tokens, with_bearer_token

CREDENTIAL_ENV = "ENTITLEMENTS_CREDENTIAL"

Request = TypeVar("Request", bound=Message)
Response = TypeVar("Response", bound=Message)


def call(
    args: argparse.Namespace,
    method: Callable[[grpc.Channel], grpc.UnaryUnaryMultiCallable[Request, Response]],
    request: Callable[[], Request],
    show: Callable[[Request, Response], None],
) -> int:
    """`request()` builds the request from `args`; `method(channel)` is the stub's RPC.
    Returns the exit status: 0 once `show` has printed the answer, 1 when the call failed."""
    try:
        message = request()
    except (ValueError, OverflowError) as error:
        # Command-line values protobuf or datetime cannot take: a number out of range,
        # text that is not UTF-8 (undecodable bytes in argv), a malformed time.
        raise UsageError(str(error)) from error
    try:
        with open_channel(args) as channel:
            response = method(channel)(message, timeout=args.timeout)
    except grpc.RpcError as error:
        print_rpc_error(error)
        return 1
    show(message, response)
    return 0


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


def print_rpc_error(error: grpc.RpcError) -> None:
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
