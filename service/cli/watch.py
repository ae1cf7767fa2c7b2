"""`entitlements watch`: streams WatchEntitlements, one block (or with --json one JSON line)
per message, until --max-messages, --seconds or Ctrl-C (all a clean end, exit status 0).

The stream gets no deadline but --seconds: the service config gives streams none
(service/service_config.py), and a watch lives for as long as its caller wants it. When
the stream fails after messages came (a server shutting down ends its streams with
UNAVAILABLE, "reconnect"; so does a connection past the server's maximum age), the
command resumes from the last message's consistency token by itself; when that fails
(no server answers), it prints how to resume: the same command with --resume-token set
to the last message's consistency token."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from entitlements.v1 import entitlement_service_pb2, entitlement_service_pb2_grpc
from service.cli.call import as_dict, build, open_channel, report_rpc_error
from service.cli.locations import find_data_dir
from service.cli.printers import print_watch_message
from service.cli.remembered import RememberedTokens
from service.cli.rpc_commands import command_line


def watch(args: argparse.Namespace) -> int:
    # Without --resume-token, this checkout's last write to the user (as the reads pass
    # it): the first message is never older than that write.
    first_token = args.resume_token or RememberedTokens(find_data_dir()).get(
        args.target, args.user_id
    )
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    watched = _Watched(last_token=args.resume_token)
    try:
        with _noting_interrupts(watched):
            return _follow(args, first_token, deadline, watched)
    except KeyboardInterrupt:
        _resume_hint(args, watched.last_token, "stopped")
        return 0


@contextmanager
def _noting_interrupts(watched: _Watched) -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt as usual, and is noted: when it lands while grpc
    waits on the stream, grpc may cancel the call and raise RpcError(CANCELLED) instead,
    which is the same stop. A SIGINT that is ignored (a background job) stays ignored."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def interrupted(signum: int, frame: object) -> None:
        watched.interrupted = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _follow(
    args: argparse.Namespace, first_token: str, deadline: float | None, watched: _Watched
) -> int:
    """Streams, resuming after a failure that came after messages, until the end asked for."""
    while True:
        request = build(
            lambda: entitlement_service_pb2.WatchEntitlementsRequest(
                user_id=args.user_id,
                feature_ids=args.feature_ids,
                resume_token=watched.last_token or first_token,
            )
        )
        before = watched.received
        try:
            if _stream(args, request, deadline, watched):
                return 0
        except grpc.RpcError as error:
            if watched.interrupted:  # Ctrl-C, surfacing as a cancelled call
                raise KeyboardInterrupt from None
            code = error.code() if isinstance(error, grpc.Call) else None
            if deadline is not None and code is grpc.StatusCode.DEADLINE_EXCEEDED:
                return 0  # --seconds passed: the end asked for
            if code is grpc.StatusCode.UNAVAILABLE and watched.received > before:
                # The connection reached its maximum age, or the server is shutting
                # down: resume from the last message (another server process may
                # answer); a resume that fails before a message is reported.
                print(f"note: {error.details()}; resuming", file=sys.stderr)
                continue
            report_rpc_error(args, error)
            _resume_hint(args, watched.last_token, "the stream ended")
            return 1


@dataclass
class _Watched:
    last_token: str  # the last message's consistency token ("" before the first)
    received: int = 0
    # Ctrl-C came (see _noting_interrupts).
    interrupted: bool = False


def _stream(
    args: argparse.Namespace,
    request: entitlement_service_pb2.WatchEntitlementsRequest,
    deadline: float | None,
    watched: _Watched,
) -> bool:
    """Shows the stream's messages; True once --max-messages are shown (or the server
    ended the stream, which it does not do by itself)."""
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    with open_channel(args) as channel:
        stub = entitlement_service_pb2_grpc.EntitlementServiceStub(channel)
        stream = stub.WatchEntitlements(request, timeout=timeout)
        try:
            for message in stream:
                watched.received += 1
                watched.last_token = message.consistency_token
                _show(args, message)
                if args.max_messages is not None and watched.received >= args.max_messages:
                    return True
        finally:
            stream.cancel()
    return True


def _show(
    args: argparse.Namespace, message: entitlement_service_pb2.WatchEntitlementsResponse
) -> None:
    if args.json:
        # One line a message (JSON Lines), so a consumer can parse each as it comes.
        print(json.dumps(as_dict(message)), flush=True)
    else:
        print_watch_message(message)
        sys.stdout.flush()  # a pipe buffers: the reader sees each message when it comes


def _resume_hint(args: argparse.Namespace, token: str, what: str) -> None:
    if not token:
        return
    again = command_line(args, "watch", args.user_id, *args.feature_ids)
    print(f"  {what}; resume it: {again} --resume-token {token}", file=sys.stderr)
