"""WatchEntitlements through real server processes sharing one SQLite file: the first
message at once, a message when a write in another process changes a watched decision
and when a decision's valid_until passes, resuming after a reconnect, the per-worker
stream limit, and graceful shutdown ending streams with UNAVAILABLE."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import entitlement_service_pb2_grpc as es_grpc
from service.grpc_api.auth import with_bearer_token
from tests.support.clients import grant_request, writer
from tests.support.harness import SERVICE_TOKEN, write_test_credentials
from tests.support.processes import ServerProcess, server_process

pytestmark = pytest.mark.subprocess

FEATURE = "offline_downloads"
# The whole stream's deadline: a bound on every wait of these tests, for a busy machine.
STREAM_SECONDS = 30

Stream = Iterator[es.WatchEntitlementsResponse]


def watcher(target: str) -> es_grpc.EntitlementServiceStub:
    channel = with_bearer_token(grpc.insecure_channel(target), SERVICE_TOKEN)
    return es_grpc.EntitlementServiceStub(channel)


def watch(target: str, user_id: str, resume_token: str = "", *features: str) -> Stream:
    request = es.WatchEntitlementsRequest(
        user_id=user_id, feature_ids=list(features or (FEATURE,)), resume_token=resume_token
    )
    stream: Stream = watcher(target).WatchEntitlements(request, timeout=STREAM_SECONDS)
    return stream


def granted(message: es.WatchEntitlementsResponse) -> bool:
    return bool(message.entitlements[0].granted)


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    db = tmp_path / "shared.db"
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    env = {"ENTITLEMENTS_MAX_WATCH_STREAMS": "3"}
    with server_process(db, credentials) as a, server_process(db, credentials, env=env) as b:
        yield a, b


def test_a_watch_sees_a_write_in_another_process_then_time_ending_the_grant(
    two_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = two_servers
    stream = watch(b.target, "watched")
    first = next(stream)
    assert first.reason == es.WATCH_REASON_INITIAL
    assert not granted(first)
    assert first.consistency_token
    assert [e.feature_id for e in first.entitlements] == [FEATURE]

    request = grant_request("watched", "w-1")
    request.duration.CopyFrom(Duration(seconds=3))
    writer(a.target).GrantEntitlement(request, timeout=10)
    after_write = next(stream)
    assert after_write.reason == es.WATCH_REASON_WRITE
    assert granted(after_write)
    assert after_write.consistency_token != first.consistency_token

    after_expiry = next(stream)  # ~3 s later, no write: the grant's end
    assert after_expiry.reason == es.WATCH_REASON_TIME
    assert not granted(after_expiry)
    stream.cancel()  # type: ignore[attr-defined]


def test_a_resumed_watch_starts_from_what_it_missed(
    two_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = two_servers
    stream = watch(b.target, "resumer")
    last = next(stream)
    stream.cancel()  # type: ignore[attr-defined]  # the client disconnects...
    written = writer(a.target).GrantEntitlement(grant_request("resumer", "w-1"), timeout=10)
    # ...and resumes with its last token. On A, which took the write, the first message
    # holds it. B may answer first from the state the client saw (its change feed poll
    # has not come yet), then sends the write: never a gap.
    resumed = watch(a.target, "resumer", last.consistency_token)
    first = next(resumed)
    assert first.reason == es.WATCH_REASON_INITIAL
    assert granted(first)
    resumed.cancel()  # type: ignore[attr-defined]
    resumed = watch(b.target, "resumer", last.consistency_token)
    first = next(resumed)
    assert first.reason == es.WATCH_REASON_INITIAL
    if not granted(first):
        assert first.consistency_token == last.consistency_token
        then = next(resumed)
        assert then.reason == es.WATCH_REASON_WRITE
        assert granted(then)
    resumed.cancel()  # type: ignore[attr-defined]
    # Resuming with the write's token (what a client that made the write holds): the
    # first message is never older than the write, on any server.
    resumed = watch(b.target, "resumer", written.consistency_token)
    assert granted(next(resumed))
    resumed.cancel()  # type: ignore[attr-defined]


def test_streams_beyond_the_limit_are_refused_and_slots_come_back(
    two_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    _, b = two_servers
    streams = [watch(b.target, f"user-{n}") for n in range(3)]
    for stream in streams:
        next(stream)
    with pytest.raises(grpc.RpcError) as refused:
        next(watch(b.target, "one-too-many"))
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    streams[0].cancel()  # type: ignore[attr-defined]
    # The cancelled stream's slot is given back (at once, but the server learns of the
    # cancel asynchronously: a few tries).
    refusals: list[grpc.StatusCode] = []
    for _ in range(50):
        try:
            next(watch(b.target, "one-too-many"))
            break
        except grpc.RpcError as error:
            refusals.append(error.code())
    else:
        pytest.fail("the cancelled stream's slot never came back")
    assert set(refusals) <= {grpc.StatusCode.RESOURCE_EXHAUSTED}, refusals


def test_bad_requests_are_invalid_argument(
    two_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    _, b = two_servers
    for user_id, token, features in (
        ("", "", (FEATURE,)),
        ("u", "not-a-token", (FEATURE,)),
        ("u", "", ("no_such_feature",)),
        ("u", "", (FEATURE, FEATURE)),
    ):
        with pytest.raises(grpc.RpcError) as error:
            next(watch(b.target, user_id, token, *features))
        assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_graceful_shutdown_ends_streams_with_unavailable(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    with server_process(db, credentials) as server:
        stream = watch(server.target, "leaver", "", FEATURE, "ad_free_playback")
        assert len(next(stream).entitlements) == 2
        server.process.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as ended:
            next(stream)
        assert ended.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "resume" in (ended.value.details() or "")
        assert server.process.wait(timeout=30) == 0
