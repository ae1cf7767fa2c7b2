"""Promotional, support and partner grants: adding and revoking them."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from service.domain.account import AccountState, Grant, GrantKind
from service.domain.catalog import Catalog, FeatureKind
from service.domain.errors import FieldViolation, InvalidRequest, NotFound


@dataclasses.dataclass(frozen=True, slots=True)
class GrantRequest:
    kind: GrantKind | None
    feature_id: str | None
    plan_id: str | None
    quota_value: int
    starts_at: datetime
    expires_at: datetime | None


def validate_grant(request: GrantRequest, catalog: Catalog) -> None:
    out: list[FieldViolation] = []
    if request.kind is None:
        out.append(FieldViolation("grant.kind", "must be a known grant kind"))
    if (request.feature_id is None) == (request.plan_id is None):
        out.append(FieldViolation("grant.target", "set exactly one of feature_id, plan_id"))
    elif request.feature_id is not None:
        feature = catalog.features.get(request.feature_id)
        if feature is None:
            out.append(
                FieldViolation("grant.feature_id", f"unknown feature '{request.feature_id}'")
            )
        elif feature.kind is FeatureKind.QUOTA and request.quota_value <= 0:
            out.append(FieldViolation("grant.quota_value", "a quota grant needs a value > 0"))
    elif request.plan_id not in catalog.plans:
        out.append(FieldViolation("grant.plan_id", f"unknown plan '{request.plan_id}'"))
    if request.quota_value < 0:
        out.append(FieldViolation("grant.quota_value", "must not be negative"))
    if request.expires_at is not None and request.expires_at <= request.starts_at:
        out.append(FieldViolation("grant.expires_at", "must be after starts_at"))
    if out:
        raise InvalidRequest(out)


def new_grant(grant_id: str, request: GrantRequest) -> Grant:
    """The grant to add (validated first); `grant_id` is derived from the request id, so a
    retried request names the same grant."""
    assert request.kind is not None
    return Grant(
        grant_id=grant_id,
        kind=request.kind,
        starts_at=request.starts_at,
        feature_id=request.feature_id,
        plan_id=request.plan_id,
        quota_value=request.quota_value if request.feature_id is not None else None,
        expires_at=request.expires_at,
    )


def with_grant(account: AccountState, grant: Grant) -> AccountState:
    return dataclasses.replace(account, grants=(*account.grants, grant))


def revoke_grant(account: AccountState, grant_id: str, now: datetime) -> tuple[AccountState, Grant]:
    """Revokes the grant at `now`; revoking a revoked grant changes nothing."""
    for index, grant in enumerate(account.grants):
        if grant.grant_id == grant_id:
            if grant.revoked_at is not None:
                return account, grant
            revoked = dataclasses.replace(grant, revoked_at=now)
            grants = (*account.grants[:index], revoked, *account.grants[index + 1 :])
            return dataclasses.replace(account, grants=grants), revoked
    raise NotFound(f"grant '{grant_id}' not found for this user")
