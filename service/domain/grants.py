"""Promotional, support and partner grants: adding and revoking them."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from service.domain.account import AccountState, Grant, GrantKind
from service.domain.catalog import Catalog, FeatureKind
from service.domain.errors import FieldViolation, InvalidRequest, NotFound
from service.domain.validation import LATEST_TIME, end_within_range


@dataclasses.dataclass(frozen=True, slots=True)
class GrantRequest:
    kind: GrantKind | None
    feature_id: str | None
    plan_id: str | None
    quota_value: int
    # None: when the grant is recorded.
    starts_at: datetime | None
    expires_at: datetime | None
    # Instead of expires_at: how long after its start the grant ends.
    duration: timedelta | None = None

    def start(self, now: datetime) -> datetime:
        return self.starts_at or now

    def end(self, now: datetime) -> datetime | None:
        if self.duration is not None:
            return self.start(now) + self.duration
        return self.expires_at


def validate_grant(request: GrantRequest, catalog: Catalog, now: datetime) -> None:
    out: list[FieldViolation] = []
    if request.kind is None:
        out.append(FieldViolation("grant.kind", "must be a known grant kind"))
    out += _target_violations(request, catalog)
    if request.quota_value < 0:
        out.append(FieldViolation("grant.quota_value", "must not be negative"))
    out += _window_violations(request, now)
    if out:
        raise InvalidRequest(out)


def _target_violations(request: GrantRequest, catalog: Catalog) -> list[FieldViolation]:
    """Exactly one of a known feature (with a value when it is a quota) or a known plan."""
    if (request.feature_id is None) == (request.plan_id is None):
        return [FieldViolation("grant.target", "set exactly one of feature_id, plan_id")]
    if request.feature_id is None:
        if request.plan_id not in catalog.plans:
            return [FieldViolation("grant.plan_id", f"unknown plan '{request.plan_id}'")]
        return []
    feature = catalog.features.get(request.feature_id)
    if feature is None:
        return [FieldViolation("grant.feature_id", f"unknown feature '{request.feature_id}'")]
    if feature.kind is FeatureKind.QUOTA and request.quota_value <= 0:
        return [FieldViolation("grant.quota_value", "a quota grant needs a value > 0")]
    return []


def _window_violations(request: GrantRequest, now: datetime) -> list[FieldViolation]:
    """An end after the start, given as expires_at or as a positive duration, not both."""
    if request.duration is not None:
        if request.expires_at is not None:
            return [FieldViolation("duration", "set at most one of grant.expires_at, duration")]
        if request.duration <= timedelta(0):
            return [FieldViolation("duration", "must be positive")]
        if end_within_range(request.start(now), request.duration) is None:
            return [
                FieldViolation(
                    "duration", f"too long: the grant would end after {LATEST_TIME:%Y-%m-%d} (UTC)"
                )
            ]
        return []
    if request.expires_at is not None and request.expires_at <= request.start(now):
        return [FieldViolation("grant.expires_at", "must be after starts_at")]
    return []


def new_grant(grant_id: str, request: GrantRequest, now: datetime) -> Grant:
    """The grant to add (validated first), recorded at `now`; `grant_id` is derived from
    the request id, so a retried request names the same grant."""
    assert request.kind is not None
    return Grant(
        grant_id=grant_id,
        kind=request.kind,
        starts_at=request.start(now),
        feature_id=request.feature_id,
        plan_id=request.plan_id,
        quota_value=request.quota_value if request.feature_id is not None else None,
        expires_at=request.end(now),
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
