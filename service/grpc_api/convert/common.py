"""What the conversions share: domain enums paired with proto enums by name,
timestamps and durations (checked as a request may carry them)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from entitlements.v1 import common_pb2
from entitlements.v1 import subscription_event_service_pb2 as events_pb2
from service.domain.account import GrantKind, Store
from service.domain.errors import FieldViolation, InvalidRequest
from service.domain.events import EventType
from service.domain.rules import Platform
from service.domain.validation import check_time

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper


_Domain = TypeVar("_Domain", bound=enum.Enum)


_Proto = TypeVar("_Proto", bound=int)


V = TypeVar("V")


def enum_map(
    domain: type[_Domain], proto: _EnumTypeWrapper[_Proto], prefix: str
) -> dict[_Domain, _Proto]:
    """Each member of the domain enum paired with the proto enum value named
    `prefix + member.name` (Store.APP_STORE -> STORE_APP_STORE). Built once at import, so a
    domain member without a proto counterpart fails there (ValueError), not at request time."""
    names = set(proto.keys())
    missing = [prefix + member.name for member in domain if prefix + member.name not in names]
    if missing:
        raise ValueError(
            f"{proto.DESCRIPTOR.full_name} lacks {', '.join(missing)}: every member of "
            f"{domain.__qualname__} needs a proto value named {prefix}<member name>"
        )
    return {member: proto.Value(prefix + member.name) for member in domain}


def inverse(to_proto: Mapping[_Domain, int]) -> dict[int, _Domain]:
    """The proto -> domain direction of an `enum_map`."""
    return {value: member for member, value in to_proto.items()}


PLATFORM_TO_PROTO = enum_map(Platform, common_pb2.Platform, "PLATFORM_")


STORE_TO_PROTO = enum_map(Store, common_pb2.Store, "STORE_")


EVENT_TYPE_TO_PROTO = enum_map(
    EventType, events_pb2.SubscriptionEventType, "SUBSCRIPTION_EVENT_TYPE_"
)


GRANT_KIND_TO_PROTO = enum_map(GrantKind, events_pb2.GrantKind, "GRANT_KIND_")


_PLATFORM_FROM_PROTO = inverse(PLATFORM_TO_PROTO)


_STORE_FROM_PROTO = inverse(STORE_TO_PROTO)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def set_timestamp(field: Timestamp, value: datetime) -> None:
    """Sets a Timestamp field from an aware datetime. Four times cheaper than
    Timestamp.FromDatetime, which dominated building an entitlement answer (two per
    answer, 100 per batch)."""
    delta = value - _EPOCH
    field.seconds = delta.days * 86_400 + delta.seconds
    field.nanos = delta.microseconds * 1000


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    set_timestamp(ts, value)
    return ts


def platform_from_proto(value: int) -> Platform | None:
    """The domain platform, or None for PLATFORM_UNSPECIFIED and unknown values."""
    return _PLATFORM_FROM_PROTO.get(value)


def store_from_proto(value: int) -> Store | None:
    """The domain store, or None for STORE_UNSPECIFIED and unknown values."""
    return _STORE_FROM_PROTO.get(value)


def optional_time(message: Any, field: str, path: str = "") -> datetime | None:
    """The timestamp field as an aware datetime, None when unset; INVALID_ARGUMENT naming
    the field when it is not a valid Timestamp (nanos 0 to 999,999,999) or not a time a
    request may carry (service.domain.validation: 1970 to 9999)."""
    value = _optional(message, field, path, "Timestamp", lambda ts: ts.ToDatetime(tzinfo=UTC))
    if value is not None:
        violations: list[FieldViolation] = []
        check_time(value, path + field, violations)
        if violations:
            raise InvalidRequest(violations)
    return value


def optional_duration(message: Any, field: str, path: str = "") -> timedelta | None:
    """The duration field as a timedelta, None when unset; INVALID_ARGUMENT naming the
    field when it is not a valid Duration: seconds beyond +-10,000 years, nanos beyond
    +-999,999,999, or nanos of the other sign than seconds (seconds=10, nanos=-1)."""
    return _optional(message, field, path, "Duration", _duration_to_timedelta)


# google.protobuf.Duration's range (duration.proto): about +-10,000 years.
_MAX_DURATION_SECONDS = 315_576_000_000


def _duration_to_timedelta(duration: Any) -> timedelta:
    seconds, nanos = duration.seconds, duration.nanos
    if (
        abs(seconds) > _MAX_DURATION_SECONDS
        or abs(nanos) > 999_999_999
        or (seconds > 0 and nanos < 0)
        or (seconds < 0 and nanos > 0)
    ):
        raise ValueError(f"not a valid Duration: seconds={seconds}, nanos={nanos}")
    value: timedelta = duration.ToTimedelta()
    return value


def _optional(
    message: Any, field: str, path: str, type_name: str, read: Callable[[Any], V]
) -> V | None:
    if not message.HasField(field):
        return None
    try:
        return read(getattr(message, field))
    except (ValueError, OverflowError) as error:
        raise InvalidRequest(
            [FieldViolation(path + field, f"not a valid google.protobuf.{type_name}")]
        ) from error
