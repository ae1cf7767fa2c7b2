"""Request validation shared by the read use cases. Collects every problem of a request
so the caller sees them all in one INVALID_ARGUMENT."""

from __future__ import annotations

from service.domain.catalog import Catalog
from service.domain.errors import FieldViolation
from service.tokens import ConsistencyToken, MalformedToken, parse_token

MAX_USER_ID_LENGTH = 128
MAX_FEATURE_ID_LENGTH = 64
MAX_BATCH_QUERIES = 100


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


def check_token(token: str, field: str, out: list[FieldViolation]) -> ConsistencyToken | None:
    if not token:
        return None
    try:
        return parse_token(token)
    except MalformedToken as exc:
        out.append(FieldViolation(field, f"malformed consistency token ({exc})"))
        return None
