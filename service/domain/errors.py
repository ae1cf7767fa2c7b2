"""Errors of the domain and use cases, independent of gRPC; the servicers map them to
statuses (INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """Base class of errors that are the caller's to fix, not the service's."""


class InvalidRequest(DomainError):
    """Bad input: answered INVALID_ARGUMENT with a google.rpc.BadRequest detail."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
        if len(violations) > 5:
            summary += f"; and {len(violations) - 5} more"
        super().__init__(f"invalid request: {summary}")


class PreconditionReason(enum.Enum):
    """Why a write's precondition failed, besides an offer's IneligibilityReason. The
    member's name is the google.rpc.ErrorInfo reason the protos document."""

    # No longer produced (events are never refused for the subscription's status; see
    # service.domain.events); kept so that clients matching the name keep compiling.
    INVALID_TRANSITION = enum.auto()
    # RecordSubscriptionEvent, "not yet": the event needs a subscription the service has
    # not seen and does not carry enough (plan and period end) to start it. Redeliver:
    # it applies once the subscription's first event has been recorded.
    SUBSCRIPTION_NOT_YET_KNOWN = enum.auto()
    # RecordSubscriptionEvent, "not yet": a refund or refund reversal names a period
    # later than any period recorded. Redeliver: it applies once the renewal that
    # started that period has been recorded.
    PERIOD_NOT_YET_KNOWN = enum.auto()
    # RecordSubscriptionEvent, "not yet": a refund reversal of the current period whose
    # refund has not been recorded. Redeliver: it applies once the refund has been.
    REFUND_NOT_YET_RECORDED = enum.auto()
    # RedeemOffer: the subscription id is taken.
    SUBSCRIPTION_EXISTS = enum.auto()
    # CreateHousehold, AddHouseholdMember: the manager has no current subscription on a
    # plan shared with a household (household_size > 1).
    NOT_A_HOUSEHOLD_PLAN = enum.auto()
    # AddHouseholdMember: the plan's household size (manager included) is reached.
    HOUSEHOLD_FULL = enum.auto()
    # CreateHousehold, AddHouseholdMember: the user already manages or belongs to another
    # household (one household per user).
    ALREADY_IN_HOUSEHOLD = enum.auto()
    # AddHouseholdMember: the member left another household less than the catalog's
    # household_join_cooldown_days ago.
    HOUSEHOLD_COOLDOWN = enum.auto()


class PreconditionFailed(DomainError):
    """The request is well formed but the user's state does not allow it: answered
    FAILED_PRECONDITION with a google.rpc.ErrorInfo (the reason's name, machine-readable)
    and a google.rpc.PreconditionFailure (`subject`, `description`). The reason is a
    PreconditionReason, or an IneligibilityReason when an offer's rule excludes the user."""

    def __init__(self, reason: enum.Enum, subject: str, description: str) -> None:
        self.reason = reason
        self.subject = subject
        self.description = description
        super().__init__(f"{subject}: {description}")


class NotFound(DomainError):
    """The named resource of this user does not exist: answered NOT_FOUND. Only used
    for resources of the caller's own request (a grant id), so it leaks nothing."""
