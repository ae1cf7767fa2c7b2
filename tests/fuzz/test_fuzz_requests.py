"""Property-based fuzzing of every RPC's request through a real server: whatever the
caller sends, the answer is a deliberate status (never INTERNAL or UNKNOWN) and the
server stays up. FUZZ_EXAMPLES sets the examples per RPC (default: a quick run for the
default suite; `make fuzz` runs a long, bounded one)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entitlements.v1 import common_pb2, entitlement_service_pb2, offer_service_pb2
from entitlements.v1 import subscription_event_service_pb2 as ev
from service.config import Settings
from service.grpc_api.auth import with_bearer_token
from service.grpc_api.server import RunningServer, start_server
from storage.sqlite import SqliteRepository
from tests.support.harness import ADMIN_TOKEN, write_test_credentials

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BAD_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

# Any text protobuf can carry (no lone surrogates), biased towards the interesting.
texts = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=200),
    st.sampled_from(["", "demo-active", "shuffle_play", "premium_individual", "US", "SE"]),
    st.text("\x00\n\r\t\x1b\u202e\u200b ", max_size=5),
)
enum_values = st.integers(min_value=-(2**31), max_value=2**31 - 1)
seconds = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.integers(min_value=1_600_000_000, max_value=1_900_000_000),
)
timestamps = st.builds(
    lambda s, n: {"seconds": s, "nanos": n},
    seconds,
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, str]]:
    folder = tmp_path_factory.mktemp("fuzz")
    settings_ = Settings(
        host="127.0.0.1",
        port=0,
        credentials_file=write_test_credentials(folder / "credentials.yaml"),
        threads=8,
    )
    running = start_server(settings_, repository=SqliteRepository(folder / "fuzz.db"))
    yield running, f"127.0.0.1:{running.port}"
    running.stop(grace_seconds=1)


@pytest.fixture(scope="module")
def channel(server: tuple[RunningServer, str]) -> Iterator[grpc.Channel]:
    channel = with_bearer_token(grpc.insecure_channel(server[1]), ADMIN_TOKEN)
    yield channel
    channel.close()


def call(channel: grpc.Channel, method: str, payload: bytes) -> grpc.StatusCode:
    rpc: Callable[..., Any] = channel.unary_unary(method)
    try:
        rpc(payload, timeout=10)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


def call_stream(channel: grpc.Channel, method: str, payload: bytes) -> grpc.StatusCode:
    """A server-streaming call's status at its start: its first message, or its error."""
    rpc: Callable[..., Any] = channel.unary_stream(method)
    stream = rpc(payload, timeout=10)
    try:
        next(stream)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    finally:
        stream.cancel()
    return grpc.StatusCode.OK


def assert_deliberate(channel: grpc.Channel, method: str, message: Message | bytes) -> None:
    payload = message if isinstance(message, bytes) else message.SerializeToString()
    streaming = method in STREAMING_METHODS
    code = call_stream(channel, method, payload) if streaming else call(channel, method, payload)
    assert code not in BAD_CODES, (method, message)


def set_time(field: Any, value: dict[str, int]) -> None:
    # Out-of-range values are what a foreign client can send; set the raw fields.
    field.seconds = value["seconds"]
    field.nanos = value["nanos"]


ENTITLEMENTS = "/entitlements.v1.EntitlementService/"
STREAMING_METHODS = {ENTITLEMENTS + "WatchEntitlements", ENTITLEMENTS + "WatchChanges"}
OFFERS = "/entitlements.v1.OfferService/"
EVENTS = "/entitlements.v1.SubscriptionEventService/"


@FUZZ
@given(user=texts, feature=texts, token=texts, full=st.booleans())
def test_get_entitlement(
    channel: grpc.Channel, user: str, feature: str, token: str, full: bool
) -> None:
    request = entitlement_service_pb2.GetEntitlementRequest(
        user_id=user,
        feature_id=feature,
        consistency=common_pb2.ReadConsistency(consistency_token=token, full_consistency=full),
    )
    assert_deliberate(channel, ENTITLEMENTS + "GetEntitlement", request)
    list_request = entitlement_service_pb2.ListEntitlementsRequest(user_id=user)
    assert_deliberate(channel, ENTITLEMENTS + "ListEntitlements", list_request)


@FUZZ
@given(user=texts, features=st.lists(texts, max_size=12), token=texts)
def test_watch_entitlements(
    channel: grpc.Channel, user: str, features: list[str], token: str
) -> None:
    request = entitlement_service_pb2.WatchEntitlementsRequest(
        user_id=user, feature_ids=features, resume_token=token
    )
    assert_deliberate(channel, ENTITLEMENTS + "WatchEntitlements", request)


@FUZZ
@given(position=texts)
def test_watch_changes(channel: grpc.Channel, position: str) -> None:
    request = entitlement_service_pb2.WatchChangesRequest(position=position)
    assert_deliberate(channel, ENTITLEMENTS + "WatchChanges", request)


@FUZZ
@given(queries=st.lists(st.tuples(texts, texts), max_size=130))
def test_batch(channel: grpc.Channel, queries: list[tuple[str, str]]) -> None:
    request = entitlement_service_pb2.BatchGetEntitlementsRequest(
        queries=[
            entitlement_service_pb2.EntitlementQuery(user_id=u, feature_id=f) for u, f in queries
        ]
    )
    assert_deliberate(channel, ENTITLEMENTS + "BatchGetEntitlements", request)


@FUZZ
@given(user=texts, market=texts, platform=enum_values, ineligible=st.booleans())
def test_get_offers(
    channel: grpc.Channel, user: str, market: str, platform: int, ineligible: bool
) -> None:
    request = offer_service_pb2.GetOffersRequest(
        user_id=user,
        market=market,
        platform=platform,  # type: ignore[arg-type]
        include_ineligible=ineligible,
    )
    assert_deliberate(channel, OFFERS + "GetOffers", request)


@FUZZ
@given(
    ids=st.tuples(texts, texts, texts),
    store=enum_values,
    event_type=enum_values,
    times=st.tuples(timestamps, timestamps, timestamps),
    plan=texts,
    offer=texts,
    market=texts,
    which=st.sets(st.sampled_from(["occurred_at", "current_period_end", "grace_period_end"])),
)
def test_record_event(
    channel: grpc.Channel,
    ids: tuple[str, str, str],
    store: int,
    event_type: int,
    times: tuple[dict[str, int], dict[str, int], dict[str, int]],
    plan: str,
    offer: str,
    market: str,
    which: set[str],
) -> None:
    request = ev.RecordSubscriptionEventRequest(
        event_id=ids[0], user_id=ids[1], subscription_id=ids[2], store=store,  # type: ignore[arg-type]
        event_type=event_type, plan_id=plan, offer_id=offer, market=market,  # type: ignore[arg-type]
    )  # fmt: skip
    for name, value in zip(
        ["occurred_at", "current_period_end", "grace_period_end"], times, strict=True
    ):
        if name in which:
            set_time(getattr(request, name), value)
    assert_deliberate(channel, EVENTS + "RecordSubscriptionEvent", request)


@FUZZ
@given(
    ids=st.tuples(texts, texts, texts),
    kind=enum_values,
    target=st.one_of(st.none(), st.tuples(st.booleans(), texts)),
    quota=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    times=st.tuples(timestamps, timestamps),
    which=st.sets(st.sampled_from(["starts_at", "expires_at"])),
)
def test_grant_and_revoke(
    channel: grpc.Channel,
    ids: tuple[str, str, str],
    kind: int,
    target: tuple[bool, str] | None,
    quota: int,
    times: tuple[dict[str, int], dict[str, int]],
    which: set[str],
) -> None:
    grant = ev.Grant(kind=kind, quota_value=quota)  # type: ignore[arg-type]
    if target is not None:
        if target[0]:
            grant.feature_id = target[1]
        else:
            grant.plan_id = target[1]
    for name, value in zip(["starts_at", "expires_at"], times, strict=True):
        if name in which:
            set_time(getattr(grant, name), value)
    request = ev.GrantEntitlementRequest(request_id=ids[0], user_id=ids[1], grant=grant)
    assert_deliberate(channel, EVENTS + "GrantEntitlement", request)
    revoke = ev.RevokeEntitlementRequest(request_id=ids[0], user_id=ids[1], grant_id=ids[2])
    assert_deliberate(channel, EVENTS + "RevokeEntitlement", revoke)


@FUZZ
@given(
    ids=st.tuples(texts, texts, texts, texts),
    market=texts,
    platform=enum_values,
    store=enum_values,
)
def test_redeem_offer(
    channel: grpc.Channel, ids: tuple[str, str, str, str], market: str, platform: int, store: int
) -> None:
    request = ev.RedeemOfferRequest(
        request_id=ids[0], user_id=ids[1], offer_id=ids[2], subscription_id=ids[3],
        market=market, platform=platform, store=store,  # type: ignore[arg-type]
    )  # fmt: skip
    assert_deliberate(channel, EVENTS + "RedeemOffer", request)


METHODS = [
    ENTITLEMENTS + "GetEntitlement",
    ENTITLEMENTS + "ListEntitlements",
    ENTITLEMENTS + "BatchGetEntitlements",
    OFFERS + "GetOffers",
    EVENTS + "RecordSubscriptionEvent",
    EVENTS + "GrantEntitlement",
    EVENTS + "RevokeEntitlement",
    EVENTS + "RedeemOffer",
    EVENTS + "CreateHousehold",
    EVENTS + "AddHouseholdMember",
    EVENTS + "RemoveHouseholdMember",
    EVENTS + "RecordStudentVerification",
    EVENTS + "RevokeStudentVerification",
    ENTITLEMENTS + "WatchEntitlements",
    ENTITLEMENTS + "WatchChanges",
    "/entitlements.v1.AdminService/GetUserHistory",
]


@FUZZ
@given(method=st.sampled_from(METHODS), payload=st.binary(max_size=300))
def test_arbitrary_bytes(channel: grpc.Channel, method: str, payload: bytes) -> None:
    assert_deliberate(channel, method, payload)


def test_server_is_still_serving(server: tuple[RunningServer, str]) -> None:
    with grpc.insecure_channel(server[1]) as plain:
        response = health_pb2_grpc.HealthStub(plain).Check(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert response.status == health_pb2.HealthCheckResponse.SERVING
