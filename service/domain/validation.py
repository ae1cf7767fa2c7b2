"""Field checks of requests, shared by the domain's own validations (events, grants) and
the use cases. Each appends a FieldViolation naming the field, so a request's problems
are all reported at once (one INVALID_ARGUMENT listing every bad field)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.domain.catalog import Catalog
from service.domain.errors import FieldViolation
from service.domain.rules import COUNTRY_CODE

MAX_ID_LENGTH = 128
MAX_USER_ID_LENGTH = 128
MAX_FEATURE_ID_LENGTH = 64
MAX_BATCH_QUERIES = 100

# The times a request may carry (every Timestamp of every RPC): nothing this service
# records happened before the Unix epoch (an event "dated year 1" is a client's bug), and
# the latest is the last instant google.protobuf.Timestamp and Python's datetime share.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
TIME_RANGE = f"{EARLIEST_TIME:%Y-%m-%d} to {LATEST_TIME:%Y-%m-%d}"


def check_time(value: datetime, field: str, out: list[FieldViolation]) -> None:
    """A time a request carries: within EARLIEST_TIME .. LATEST_TIME."""
    if not EARLIEST_TIME <= value <= LATEST_TIME:
        out.append(FieldViolation(field, f"must be a time from {TIME_RANGE} (UTC)"))


def end_within_range(start: datetime, length: timedelta) -> datetime | None:
    """start + length, or None when that would be past LATEST_TIME (or before
    EARLIEST_TIME): the sum would overflow datetime, or name a time no request may."""
    try:
        end = start + length
    except OverflowError:
        return None
    return end if EARLIEST_TIME <= end <= LATEST_TIME else None


def check_id(value: str, field: str, out: list[FieldViolation]) -> None:
    """A client-supplied id (event, request, subscription, grant)."""
    if not value:
        out.append(FieldViolation(field, "must not be empty"))
    elif len(value) > MAX_ID_LENGTH or not value.isprintable():
        out.append(FieldViolation(field, f"must be 1 to {MAX_ID_LENGTH} printable characters"))


def check_market(market: str, field: str, out: list[FieldViolation]) -> None:
    if not COUNTRY_CODE.fullmatch(market):
        out.append(
            FieldViolation(field, "must be an upper-case ISO 3166-1 alpha-2 code, e.g. 'SE'")
        )


def check_user_id(user_id: str, field: str, out: list[FieldViolation]) -> None:
    if not user_id:
        out.append(FieldViolation(field, "must not be empty"))
    elif len(user_id) > MAX_USER_ID_LENGTH:
        out.append(FieldViolation(field, f"must be at most {MAX_USER_ID_LENGTH} characters"))
    elif not user_id.isprintable() or user_id != user_id.strip():
        out.append(
            FieldViolation(field, "must be printable, without control characters or edge spaces")
        )


def check_feature_id(
    catalog: Catalog, feature_id: str, field: str, out: list[FieldViolation]
) -> None:
    if not feature_id:
        out.append(FieldViolation(field, "must not be empty"))
    elif len(feature_id) > MAX_FEATURE_ID_LENGTH:
        out.append(FieldViolation(field, f"must be at most {MAX_FEATURE_ID_LENGTH} characters"))
    elif feature_id not in catalog.features:
        out.append(FieldViolation(field, f"unknown feature '{feature_id}'"))
