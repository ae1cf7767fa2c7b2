"""How the SQLite backend stores values SQLite has no type for: timestamps as ISO 8601
text in UTC, booleans as 0 or 1."""

from __future__ import annotations

from datetime import UTC, datetime

from storage.rows import RowCodec, integer, text, utc


def encode_ts(value: datetime) -> str:
    """ISO 8601 in UTC with a fixed width, so stored timestamps also sort as text."""
    return utc(value).isoformat(timespec="microseconds")


def decode_ts(value: object) -> datetime:
    parsed = datetime.fromisoformat(text(value))
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


CODEC = RowCodec(
    encode_ts=encode_ts,
    decode_ts=decode_ts,
    encode_bool=int,
    decode_bool=lambda value: bool(integer(value)),
)
