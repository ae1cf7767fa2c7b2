"""Every Timestamp and Duration of every RPC's request, fuzzed through a real server: an
invalid one (outside the range a time may take, malformed nanos, a Duration with mixed
signs, a grant that would end after the last representable time) is INVALID_ARGUMENT
whose BadRequest names that field; a valid one is never INTERNAL or UNKNOWN (issue 25: a
grant of 8,000 years answered INTERNAL, a Duration of seconds=10 nanos=-1 and events dated
year 1 were accepted).

The fields are found by walking the request descriptors of every service, so a new RPC or
field with a time in it is fuzzed too (it needs a valid request in BASE_REQUESTS)."""

from __future__ import annotations

import importlib
import os
import pkgutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import entitlements.v1
from entitlements.v1 import admin_service_pb2 as ad
from entitlements.v1 import common_pb2, offer_service_pb2
from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import subscription_event_service_pb2 as ev
from service.config import Settings
from service.domain.validation import EARLIEST_TIME, LATEST_TIME
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
TIME_TYPES = {"google.protobuf.Timestamp": "Timestamp", "google.protobuf.Duration": "Duration"}

# google.protobuf.Duration's range: +-10,000 years, nanos of the seconds' sign.
MAX_DURATION_SECONDS = 315_576_000_000
EARLIEST_SECONDS = int(EARLIEST_TIME.timestamp())
LATEST_SECONDS = int(LATEST_TIME.timestamp())
INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)


def _time_fields(
    descriptor: Descriptor, prefix: str = "", seen: frozenset[str] = frozenset()
) -> Iterator[tuple[str, str]]:
    """(dotted field path, "Timestamp" or "Duration") of the message and its submessages."""
    for field in descriptor.fields:
        message = field.message_type
        if message is None:
            continue
        if message.full_name in TIME_TYPES:
            yield prefix + field.name, TIME_TYPES[message.full_name]
        elif message.full_name not in seen:
            yield from _time_fields(message, f"{prefix}{field.name}.", seen | {message.full_name})


def _rpcs() -> dict[str, tuple[Descriptor, bool]]:
    """Every RPC of the API: "/package.Service/Method" -> (request descriptor, streaming)."""
    found = {}
    for module_info in pkgutil.iter_modules(entitlements.v1.__path__):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"entitlements.v1.{module_info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                found[path] = (method.input_type, method.server_streaming)
    return found


RPCS = _rpcs()
TIME_FIELDS = sorted(
    (method, path, kind)
    for method, (descriptor, _) in RPCS.items()
    for path, kind in _time_fields(descriptor)
)
EVENTS = "/entitlements.v1.SubscriptionEventService/"
ENTITLEMENTS = "/entitlements.v1.EntitlementService/"


def _now() -> datetime:
    return datetime.now(UTC)


def _record_event() -> Message:
    request = ev.RecordSubscriptionEventRequest(
        event_id=f"time-fuzz-{_now().timestamp()}",
        user_id="time-fuzz-user",
        subscription_id="time-fuzz-sub",
        store=common_pb2.STORE_WEB,
        event_type=ev.SUBSCRIPTION_EVENT_TYPE_PURCHASED,
        plan_id="premium_individual",
        market="SE",
    )
    request.occurred_at.FromDatetime(_now() - timedelta(minutes=1))
    request.current_period_end.FromDatetime(_now() + timedelta(days=30))
    return request


def _grant() -> Message:
    return ev.GrantEntitlementRequest(
        request_id=f"time-fuzz-{_now().timestamp()}",
        user_id="time-fuzz-user",
        grant=ev.Grant(kind=ev.GRANT_KIND_SUPPORT, feature_id="offline_downloads"),
    )


def _student() -> Message:
    request = ev.RecordStudentVerificationRequest(
        request_id=f"time-fuzz-{_now().timestamp()}",
        user_id="time-fuzz-student",
        provider_reference="time-fuzz",
    )
    request.verified_until.FromDatetime(_now() + timedelta(days=100))
    return request


# A request of each RPC with a time in it that the server accepts as it is.
BASE_REQUESTS: dict[str, Callable[[], Message]] = {
    EVENTS + "RecordSubscriptionEvent": _record_event,
    EVENTS + "GrantEntitlement": _grant,
    EVENTS + "RecordStudentVerification": _student,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("time-fuzz")
    settings_ = Settings(
        host="127.0.0.1",
        port=0,
        credentials_file=write_test_credentials(folder / "credentials.yaml"),
        threads=8,
        max_rpc_seconds=30,
        write_timeout_seconds=30,
    )
    running: RunningServer = start_server(
        settings_, repository=SqliteRepository(folder / "times.db", create=True)
    )
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        running.stop(grace_seconds=1)


@pytest.fixture(scope="module")
def channel(server: str) -> Iterator[grpc.Channel]:
    channel = with_bearer_token(grpc.insecure_channel(server), ADMIN_TOKEN)
    yield channel
    channel.close()


def _call(channel: grpc.Channel, method: str, request: Message) -> grpc.RpcError | None:
    payload = request.SerializeToString()
    if RPCS[method][1]:
        open_stream: Callable[..., Any] = channel.unary_stream(method)
        stream = open_stream(payload, timeout=30)
        try:
            next(stream)
        except grpc.RpcError as error:
            return error
        finally:
            stream.cancel()
        return None
    unary: Callable[..., Any] = channel.unary_unary(method)
    try:
        unary(payload, timeout=30)
    except grpc.RpcError as error:
        return error
    return None


def _violated_fields(error: grpc.RpcError) -> list[str]:
    assert isinstance(error, grpc.Call)
    status = rpc_status.from_call(error)
    assert status is not None, error.details()
    fields = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields.extend(violation.field for violation in bad_request.field_violations)
    return fields


def _with_time(method: str, path: str, seconds: int, nanos: int) -> Message:
    request = BASE_REQUESTS[method]()
    *parents, name = path.split(".")
    message: Any = request
    for parent in parents:
        message = getattr(message, parent)
    field = getattr(message, name)
    field.seconds = seconds
    field.nanos = nanos
    return request


def _assert_invalid(
    channel: grpc.Channel, method: str, path: str, seconds: int, nanos: int
) -> None:
    request = _with_time(method, path, seconds, nanos)
    error = _call(channel, method, request)
    assert error is not None, f"{method} accepted {path} = ({seconds}, {nanos})"
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (path, seconds, nanos, error)
    assert path in _violated_fields(error), (path, seconds, nanos, error.details())


invalid_timestamps = st.one_of(
    st.tuples(st.integers(INT64[0], EARLIEST_SECONDS - 1), st.integers(0, 999_999_999)),
    st.tuples(st.integers(LATEST_SECONDS + 1, INT64[1]), st.integers(0, 999_999_999)),
    st.tuples(
        st.integers(EARLIEST_SECONDS, LATEST_SECONDS),
        st.one_of(st.integers(INT32[0], -1), st.integers(1_000_000_000, INT32[1])),
    ),
    # Year 1 (the event), the day before the earliest and the first second after
    # the latest.
    st.sampled_from(
        [(-62_135_596_800, 0), (EARLIEST_SECONDS - 86_400, 0), (LATEST_SECONDS + 1, 0)]
    ),
)
invalid_durations = st.one_of(
    st.tuples(st.integers(MAX_DURATION_SECONDS + 1, INT64[1]), st.integers(0, 999_999_999)),
    st.tuples(st.integers(INT64[0], -MAX_DURATION_SECONDS - 1), st.integers(-999_999_999, 0)),
    st.tuples(
        st.integers(-MAX_DURATION_SECONDS, MAX_DURATION_SECONDS),
        st.one_of(st.integers(INT32[0], -1_000_000_000), st.integers(1_000_000_000, INT32[1])),
    ),
    # Mixed signs: seconds=10, nanos=-1 was accepted.
    st.tuples(st.integers(1, MAX_DURATION_SECONDS), st.integers(-999_999_999, -1)),
    st.tuples(st.integers(-MAX_DURATION_SECONDS, -1), st.integers(1, 999_999_999)),
    st.sampled_from([(10, -1), (-10, 1)]),
)
valid_timestamps = st.tuples(
    st.one_of(
        st.integers(EARLIEST_SECONDS, LATEST_SECONDS),
        st.integers(1_700_000_000, 1_900_000_000),
        st.sampled_from([EARLIEST_SECONDS, LATEST_SECONDS]),
    ),
    st.integers(0, 999_999_999),
)
valid_durations = st.one_of(
    st.tuples(st.integers(0, MAX_DURATION_SECONDS), st.integers(0, 999_999_999)),
    st.tuples(st.integers(-MAX_DURATION_SECONDS, 0), st.integers(-999_999_999, 0)),
    st.tuples(st.integers(1, 10 * 365 * 86_400), st.integers(0, 999_999_999)),
)

TIMESTAMP_FIELDS = [(m, p) for m, p, kind in TIME_FIELDS if kind == "Timestamp"]
DURATION_FIELDS = [(m, p) for m, p, kind in TIME_FIELDS if kind == "Duration"]


def test_every_time_field_is_found_and_has_a_valid_request(channel: grpc.Channel) -> None:
    assert (EVENTS + "GrantEntitlement", "duration", "Duration") in TIME_FIELDS
    assert (EVENTS + "RecordSubscriptionEvent", "occurred_at", "Timestamp") in TIME_FIELDS
    methods = {method for method, _, _ in TIME_FIELDS}
    assert methods <= BASE_REQUESTS.keys(), "add a valid request for " + str(
        methods - BASE_REQUESTS.keys()
    )
    for method in sorted(methods):
        error = _call(channel, method, BASE_REQUESTS[method]())
        assert error is None, (method, error)


@FUZZ
@given(field=st.sampled_from(TIMESTAMP_FIELDS), value=invalid_timestamps)
def test_an_invalid_timestamp_is_invalid_argument_naming_it(
    channel: grpc.Channel, field: tuple[str, str], value: tuple[int, int]
) -> None:
    _assert_invalid(channel, *field, *value)


@FUZZ
@given(field=st.sampled_from(DURATION_FIELDS), value=invalid_durations)
def test_an_invalid_duration_is_invalid_argument_naming_it(
    channel: grpc.Channel, field: tuple[str, str], value: tuple[int, int]
) -> None:
    _assert_invalid(channel, *field, *value)


def _reads_of(user_id: str) -> list[tuple[str, Message]]:
    """The reads whose answers a stored time feeds (validity, offers, history, watch)."""
    return [
        (ENTITLEMENTS + "ListEntitlements", es.ListEntitlementsRequest(user_id=user_id)),
        (
            ENTITLEMENTS + "GetEntitlement",
            es.GetEntitlementRequest(user_id=user_id, feature_id="offline_downloads"),
        ),
        (ENTITLEMENTS + "WatchEntitlements", es.WatchEntitlementsRequest(user_id=user_id)),
        (
            "/entitlements.v1.OfferService/GetOffers",
            offer_service_pb2.GetOffersRequest(
                user_id=user_id, market="SE", platform=common_pb2.PLATFORM_WEB
            ),
        ),
        ("/entitlements.v1.AdminService/GetUserHistory", ad.GetUserHistoryRequest(user_id=user_id)),
    ]


def _assert_never_internal(
    channel: grpc.Channel, method: str, path: str, value: tuple[int, int]
) -> None:
    """The write, then every read of its user, on a user of its own (the stored time
    must not break the answers that follow)."""
    request: Any = _with_time(method, path, *value)
    request.user_id = f"time-fuzz-{uuid.uuid4().hex}"
    error = _call(channel, method, request)
    assert error is None or error.code() not in BAD_CODES, (method, path, value, error)
    for read, read_request in _reads_of(request.user_id):
        error = _call(channel, read, read_request)
        assert error is None or error.code() not in BAD_CODES, (path, value, read, error)


@FUZZ
@given(field=st.sampled_from(TIMESTAMP_FIELDS), value=valid_timestamps)
def test_a_valid_timestamp_is_never_internal(
    channel: grpc.Channel, field: tuple[str, str], value: tuple[int, int]
) -> None:
    _assert_never_internal(channel, *field, value)


@FUZZ
@given(field=st.sampled_from(DURATION_FIELDS), value=valid_durations)
def test_a_valid_duration_is_never_internal(
    channel: grpc.Channel, field: tuple[str, str], value: tuple[int, int]
) -> None:
    _assert_never_internal(channel, *field, value)


@pytest.mark.parametrize(
    ("years", "starts_at"),
    [(8_000, None), (1, datetime(9999, 6, 1, tzinfo=UTC))],
)
def test_a_grant_ending_after_the_latest_time_names_its_duration(
    channel: grpc.Channel, years: int, starts_at: datetime | None
) -> None:
    """The issue's reproduction: a duration of 8,000 years answered INTERNAL (the end
    overflowed Python's datetime in the domain)."""
    request = _grant()
    assert isinstance(request, ev.GrantEntitlementRequest)
    request.duration.seconds = years * 366 * 86_400
    if starts_at is not None:
        request.grant.starts_at.FromDatetime(starts_at)
    error = _call(channel, EVENTS + "GrantEntitlement", request)
    assert error is not None, error
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error
    assert _violated_fields(error) == ["duration"]


@pytest.mark.parametrize(("method", "path"), TIMESTAMP_FIELDS)
@pytest.mark.parametrize("seconds", [EARLIEST_SECONDS, LATEST_SECONDS])
def test_the_first_and_last_times_are_never_internal(
    channel: grpc.Channel, method: str, path: str, seconds: int
) -> None:
    _assert_never_internal(channel, method, path, (seconds, 999_999_999))
