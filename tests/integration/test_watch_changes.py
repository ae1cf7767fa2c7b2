"""EntitlementService.WatchChanges through a real server: the first message at once, a
write's change with its token, resuming from a position, a reset for an unknown one, the
service role, and the bound on open streams."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import entitlement_service_pb2_grpc as es_grpc
from entitlements.v1 import subscription_event_service_pb2_grpc as ev_grpc
from service.config import Settings
from service.grpc_api.auth import with_bearer_token
from service.grpc_api.server import start_server
from service.usecases.tokens import issue_token
from storage.sqlite import SqliteRepository
from tests.support.clients import grant_request
from tests.support.harness import SERVICE_TOKEN, Harness

WAIT = 20.0  # generous: a busy machine


class Reader:
    """Reads a stream on a thread, so that a test can wait for a message with a bound."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.messages: queue.Queue[es.WatchChangesResponse | BaseException] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for message in self.stream:
                self.messages.put(message)
        except BaseException as error:  # the end of the stream, reported to the test
            self.messages.put(error)

    def next(self, changes: bool = False) -> es.WatchChangesResponse:
        """The next message (with changes or a reset when `changes`: heartbeats skipped)."""
        while True:
            item = self.messages.get(timeout=WAIT)
            if isinstance(item, BaseException):
                raise item
            if not changes or item.changes or item.reset:
                return item


@pytest.fixture
def watch(harness: Harness) -> Iterator[Any]:
    readers: list[Reader] = []

    def open_stream(position: str = "") -> Reader:
        reader = Reader(
            harness.entitlements.WatchChanges(es.WatchChangesRequest(position=position))
        )
        readers.append(reader)
        return reader

    yield open_stream
    for reader in readers:
        reader.stream.cancel()


def test_a_write_reaches_the_stream_with_its_token(harness: Harness, watch: Any) -> None:
    reader = watch()
    first = reader.next()
    assert not first.reset
    assert not first.changes
    assert first.position
    answer = ev_grpc.SubscriptionEventServiceStub(harness.admin_channel).GrantEntitlement(
        grant_request("wc-user-1", "wc-1"), timeout=WAIT
    )
    message = reader.next(changes=True)
    assert not message.reset
    assert [(c.user_id, c.consistency_token) for c in message.changes] == [
        ("wc-user-1", answer.consistency_token)
    ]
    assert message.changes[0].version >= 1
    assert message.changes[0].consistency_token == issue_token(
        "wc-user-1", message.changes[0].version
    )


def test_resume_sends_what_followed_once_and_an_unknown_position_resets(
    harness: Harness, watch: Any
) -> None:
    writes = ev_grpc.SubscriptionEventServiceStub(harness.admin_channel)
    reader = watch()
    start = reader.next().position
    writes.GrantEntitlement(grant_request("wc-user-2", "wc-2"), timeout=WAIT)
    after_first = reader.next(changes=True).position
    writes.GrantEntitlement(grant_request("wc-user-3", "wc-3"), timeout=WAIT)
    reader.next(changes=True)

    resumed = watch(after_first).next(changes=True)
    assert not resumed.reset
    assert [c.user_id for c in resumed.changes] == ["wc-user-3"]
    from_start = watch(start).next(changes=True)
    assert [c.user_id for c in from_start.changes] == ["wc-user-2", "wc-user-3"]
    unknown = watch("a-position-of-another-server").next()
    assert unknown.reset
    assert unknown.position


def test_the_stream_needs_a_read_role_and_is_bounded(harness: Harness, watch: Any) -> None:
    anonymous = es_grpc.EntitlementServiceStub(grpc.insecure_channel(harness.target))
    with pytest.raises(grpc.RpcError) as refused:
        next(anonymous.WatchChanges(es.WatchChangesRequest(), timeout=WAIT))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    with pytest.raises(grpc.RpcError) as malformed:
        next(harness.entitlements.WatchChanges(es.WatchChangesRequest(position="x" * 300)))
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    changes = harness.running.app.changes
    limit = changes.max_streams
    changes.max_streams = 2  # the bound is a setting (max_change_streams); 2 here
    try:
        open_now = [watch(), watch()]
        for reader in open_now:
            reader.next()
        with pytest.raises(grpc.RpcError) as exhausted:
            watch().next()
        assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        changes.max_streams = limit


def test_a_position_of_another_server_process_is_caught_up_from_the_feed(
    harness: Harness, watch: Any
) -> None:
    """Another process on the same store never published the client's position (its
    batches end elsewhere; here it started after it): it reads the changes after it from
    the feed, and the stream goes on without a reset."""
    writes = ev_grpc.SubscriptionEventServiceStub(harness.admin_channel)
    start = watch().next().position
    writes.GrantEntitlement(grant_request("wc-user-4", "wc-4"), timeout=WAIT)
    writes.GrantEntitlement(grant_request("wc-user-5", "wc-5"), timeout=WAIT)
    assert harness.db_path is not None
    other = start_server(
        Settings(
            host="127.0.0.1",
            port=0,
            storage_url=f"sqlite:///{harness.db_path}",
            credentials_file=harness.credentials_file,
        ),
        repository=SqliteRepository(harness.db_path),
    )
    channel = with_bearer_token(grpc.insecure_channel(f"127.0.0.1:{other.port}"), SERVICE_TOKEN)
    try:
        stub = es_grpc.EntitlementServiceStub(channel)
        reader = Reader(stub.WatchChanges(es.WatchChangesRequest(position=start)))
        message = reader.next()
        assert not message.reset
        assert {"wc-user-4", "wc-user-5"} <= {c.user_id for c in message.changes}
        assert other.app.changes.caught_up == 1
        reader.stream.cancel()
    finally:
        channel.close()
        other.stop(grace_seconds=1)
