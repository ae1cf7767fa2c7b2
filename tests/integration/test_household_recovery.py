"""Households through a real server over a real SQLite file, where the shared harness
cannot show it:
- a member's read with the manager's consistency token sees the manager's write although
  the member's state is cached (the change feed is made too slow to drop it first);
- a store failure between the two writes of AddHouseholdMember (the seat on the
  manager's account, the membership on the member's) is completed, or undone, by a retry
  with the same request id, and a manager who gives up frees the seat by removing the
  member: no seat is left without a member."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import datetime

import grpc
import pytest

from entitlements.v1 import entitlement_service_pb2_grpc, offer_service_pb2_grpc
from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements.v1 import subscription_event_service_pb2_grpc as ev_grpc
from service.config import Settings
from service.domain.errors import StoreUnavailable
from service.domain.households import active_seats, managed_household
from service.grpc_api.auth import with_bearer_token
from service.grpc_api.server import RunningServer, start_server
from storage.faults import FaultInjectingRepository
from storage.repository import AccountMutation, Applied, IdempotencyKey
from storage.sqlite import SqliteRepository
from tests.support.harness import ADMIN_TOKEN, NOW, SERVICE_TOKEN, Harness, write_test_credentials
from tests.support.rpcs import DAY, FAMILY_ONLY, PREMIUM, add, entitled, event, remove

# Which writes fail: (user id, idempotency key kind) -> fail?
WriteFilter = Callable[[str, str], bool]


class FailingWrites(FaultInjectingRepository):
    """The real SQLite repository, with the writes that `fails` names answered
    UNAVAILABLE (as a store timing out on that transaction would)."""

    def __init__(self, inner: SqliteRepository) -> None:
        super().__init__(inner)
        self.fails: WriteFilter = lambda user_id, kind: False

    def apply(
        self, user_id: str, key: IdempotencyKey, mutate: AccountMutation, recorded_at: datetime
    ) -> Applied:
        if self.fails(user_id, key.kind):
            raise StoreUnavailable(f"injected failure of {key.kind} on {user_id}")
        return super().apply(user_id, key, mutate, recorded_at)


@dataclasses.dataclass
class Server:
    harness: Harness
    store: FailingWrites
    writes: ev_grpc.SubscriptionEventServiceStub

    def seats(self, manager: str) -> list[str | None]:
        account = self.store.inner.load(manager).account
        managed = managed_household(account)
        assert managed is not None
        return [seat.member_user_id for seat in active_seats(account, managed.household_id)]

    def household(self, manager: str, plan: str) -> str:
        self.writes.RecordSubscriptionEvent(
            event(manager, f"{manager}-buy", ev.SUBSCRIPTION_EVENT_TYPE_PURCHASED,
                  NOW - DAY, NOW + 29 * DAY, plan=plan),
            timeout=10,
        )  # fmt: skip
        created = self.writes.CreateHousehold(
            ev.CreateHouseholdRequest(request_id=f"{manager}-create", manager_user_id=manager),
            timeout=10,
        )
        household_id: str = created.household_id
        return household_id


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("household-recovery")
    store = FailingWrites(SqliteRepository(folder / "entitlements.db"))
    settings = Settings(
        host="127.0.0.1",
        port=0,
        credentials_file=write_test_credentials(folder / "credentials.yaml"),
        # The change feed would drop the member's cached state within 0.1 s: here only
        # the manager's token can make the member's read see the manager's write.
        feed_poll_seconds=600,
        cache_ttl_seconds=600,
    )
    running: RunningServer = start_server(settings, repository=store, clock=lambda: NOW)
    target = f"127.0.0.1:{running.port}"
    channel = with_bearer_token(grpc.insecure_channel(target), SERVICE_TOKEN)
    admin = with_bearer_token(grpc.insecure_channel(target), ADMIN_TOKEN)
    harness = Harness(
        running,
        channel,
        entitlement_service_pb2_grpc.EntitlementServiceStub(channel),
        offer_service_pb2_grpc.OfferServiceStub(channel),
        folder / "entitlements.db",
        admin,
        folder / "credentials.yaml",
        lambda: SqliteRepository(folder / "entitlements.db"),
    )
    try:
        yield Server(harness, store, ev_grpc.SubscriptionEventServiceStub(admin))
    finally:
        store.fails = lambda user_id, kind: False
        channel.close()
        admin.close()
        running.stop(grace_seconds=1)


def test_a_members_read_with_the_managers_token_sees_the_managers_write(server: Server) -> None:
    harness, writes = server.harness, server.writes
    household_id = server.household("token-manager", "premium_family")
    added = add(writes, "token-add", "token-manager", household_id, "token-member")
    assert entitled(harness, "token-member", FAMILY_ONLY, added.consistency_token)  # cached

    expired = writes.RecordSubscriptionEvent(
        event("token-manager", "token-manager-exp", ev.SUBSCRIPTION_EVENT_TYPE_EXPIRED,
              NOW - DAY / 2, NOW + 29 * DAY, plan="premium_family"),
        timeout=10,
    )  # fmt: skip
    # Without a token the member's cached state may still be served (until the feed
    # drops it); the member's own older token does not cover the manager's write either.
    assert entitled(harness, "token-member", FAMILY_ONLY)
    assert entitled(harness, "token-member", FAMILY_ONLY, added.consistency_token)
    # The manager's token does.
    assert not entitled(harness, "token-member", FAMILY_ONLY, expired.consistency_token)
    assert not entitled(harness, "token-member", PREMIUM, expired.consistency_token)
    # Once read, the newer state is what the cache holds for the member.
    assert not entitled(harness, "token-member", FAMILY_ONLY)
    # An older manager token is satisfied by the cached state: no store read needed.
    reads = server.store.calls
    assert not entitled(harness, "token-member", PREMIUM, added.manager_consistency_token)
    assert server.store.calls == reads


def test_a_failed_membership_write_is_completed_by_a_retry(server: Server) -> None:
    writes = server.writes
    household_id = server.household("retry-manager", "premium_duo")
    server.store.fails = lambda user_id, kind: user_id == "retry-member"
    with pytest.raises(grpc.RpcError) as raised:
        add(writes, "retry-add", "retry-manager", household_id, "retry-member")
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert server.seats("retry-manager") == ["retry-member"]  # half done: a seat, no member

    server.store.fails = lambda user_id, kind: False
    added = add(writes, "retry-add", "retry-manager", household_id, "retry-member")
    assert entitled(server.harness, "retry-member", PREMIUM, added.consistency_token)
    assert server.seats("retry-manager") == ["retry-member"]


def test_a_refused_membership_whose_seat_release_failed_is_released_by_a_retry(
    server: Server,
) -> None:
    writes = server.writes
    elsewhere = server.household("busy-manager", "premium_family")
    add(writes, "busy-add", "busy-manager", elsewhere, "busy-member")
    household_id = server.household("undo-manager", "premium_duo")
    server.store.fails = lambda user_id, kind: kind == "household_unseat"
    with pytest.raises(grpc.RpcError) as raised:
        add(writes, "undo-add", "undo-manager", household_id, "busy-member")
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert server.seats("undo-manager") == ["busy-member"]  # refused, seat still held

    server.store.fails = lambda user_id, kind: False
    with pytest.raises(grpc.RpcError) as raised:
        add(writes, "undo-add", "undo-manager", household_id, "busy-member")
    assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert server.seats("undo-manager") == []
    add(writes, "undo-add-2", "undo-manager", household_id, "undo-partner")


def test_a_manager_who_gives_up_frees_the_seat_by_removing_the_member(server: Server) -> None:
    writes = server.writes
    household_id = server.household("gave-up-manager", "premium_duo")
    server.store.fails = lambda user_id, kind: user_id == "gave-up-member"
    with pytest.raises(grpc.RpcError):
        add(writes, "gave-up-add", "gave-up-manager", household_id, "gave-up-member")
    server.store.fails = lambda user_id, kind: False
    with pytest.raises(grpc.RpcError) as raised:  # the Duo's one seat is taken
        add(writes, "gave-up-add-2", "gave-up-manager", household_id, "gave-up-other")
    assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION

    remove(writes, "gave-up-remove", "gave-up-manager", household_id, "gave-up-member")
    assert server.seats("gave-up-manager") == []
    add(writes, "gave-up-add-3", "gave-up-manager", household_id, "gave-up-other")
