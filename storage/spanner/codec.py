"""How the Spanner backend names and stores the rows of storage.rows: tables and columns
in CamelCase (`household_memberships` is HouseholdMemberships, `user_id` UserId), typed
with Spanner's TypeCodes; TIMESTAMP and BOOL columns hold aware datetimes and booleans as
they are."""

from __future__ import annotations

from datetime import UTC, datetime

from google.cloud.spanner_v1 import TypeCode

from storage.rows import Columns as RowColumns
from storage.rows import ColumnType, RowCodec, utc

# (name, type) of a column as Spanner has it.
Columns = tuple[tuple[str, TypeCode], ...]

_TYPES = {
    ColumnType.TEXT: TypeCode.STRING,
    ColumnType.INTEGER: TypeCode.INT64,
    ColumnType.BOOLEAN: TypeCode.BOOL,
    ColumnType.TIMESTAMP: TypeCode.TIMESTAMP,
}


def name(snake_case: str) -> str:
    """Spanner's name of a table or column of storage.rows."""
    return "".join(part.capitalize() for part in snake_case.split("_"))


def names(snake_case: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name(each) for each in snake_case)


def columns(row_columns: RowColumns) -> Columns:
    return tuple((name(column), _TYPES[kind]) for column, kind in row_columns)


def parse_ts(value: object) -> datetime:
    """A plain UTC datetime (the client returns its DatetimeWithNanoseconds subclass)."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected TIMESTAMP in the database, got {type(value).__name__}")
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return datetime(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        tzinfo=UTC,
    )


CODEC = RowCodec(encode_ts=utc, decode_ts=parse_ts)
