"""Field checks shared by the domain's validations and the use cases: each appends a
FieldViolation naming the field, so a request's problems are all reported at once."""

from __future__ import annotations

from service.domain.catalog import COUNTRY_CODE
from service.domain.errors import FieldViolation

MAX_ID_LENGTH = 128


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
