"""Every error a call of the service can end with, in one tree; each carries a `kind`
that says what happened without naming a transport. The gRPC layer answers a kind with a
status from one table (service.grpc_api.errors); anything outside this tree is a bug,
answered INTERNAL without details.

    ServiceError                      kind
    ├── DomainError                   (the caller's to fix: retrying the same request fails again)
    │   ├── InvalidRequest            INVALID_REQUEST      bad input, field by field
    │   ├── PreconditionFailed        FAILED_PRECONDITION  the user's state does not allow it
    │   ├── NotFound                  NOT_FOUND            a resource of the caller's request
    │   └── IdempotencyConflict       ID_REUSED            an id used before for another request
    ├── DeadlineExceeded              DEADLINE_EXCEEDED    the call's time ran out
    ├── TooManyWatches                OVERLOADED           this worker holds all the watches it may
    │   └── TooManyChangeStreams      OVERLOADED           ... all the change streams it may
    └── Unavailable                   (the service's: the same request may succeed later)
        ├── StoreError                STORE_UNAVAILABLE    the store cannot serve (as configured)
        │   └── StoreUnavailable      STORE_UNAVAILABLE    the store failed or did not answer
        │       ├── storage.sqlite.connection.DatabaseNotFound, SchemaNotReady
        │       └── storage.spanner.client.SchemaNotReady
        └── WatchClosed               SHUTTING_DOWN        the server is stopping a watch
            └── ChangeStreamsClosed   SHUTTING_DOWN        ... a change stream (or follows no feed)

Plain Python, so that every layer can raise them: the domain, storage (which imports only
the domain), the use cases and the transport. Errors of configuration and start-up
(SettingsError, CatalogError, CredentialsError...) are not answers to a call and live
with what they check.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ErrorKind(enum.Enum):
    """What went wrong, as a caller should understand it (each transport maps it)."""

    INVALID_REQUEST = "invalid_request"
    FAILED_PRECONDITION = "failed_precondition"
    NOT_FOUND = "not_found"
    ID_REUSED = "id_reused"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    OVERLOADED = "overloaded"
    STORE_UNAVAILABLE = "store_unavailable"
    SHUTTING_DOWN = "shutting_down"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class ServiceError(Exception):
    """Base class of every error a call may end with. `public_message` is what a caller
    is told: the error's own text unless that could reveal internals."""

    kind: ErrorKind

    @property
    def public_message(self) -> str:
        return str(self)


class DomainError(ServiceError):
    """Base class of errors that are the caller's to fix, not the service's."""


class InvalidRequest(DomainError):
    """Bad input: each violation names a field of the request."""

    kind = ErrorKind.INVALID_REQUEST

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
        if len(violations) > 5:
            summary += f"; and {len(violations) - 5} more"
        super().__init__(f"invalid request: {summary}")


def raise_if_invalid(violations: list[FieldViolation]) -> None:
    """Raises InvalidRequest when `violations` holds any."""
    if violations:
        raise InvalidRequest(violations)


class PreconditionReason(enum.Enum):
    """Why a write's precondition failed, besides an offer's IneligibilityReason. The
    member's name is the google.rpc.ErrorInfo reason the protos document."""

    # No longer produced (events are never refused for the subscription's status; see
    # service.domain.events); kept so that clients matching the name keep compiling.
    INVALID_TRANSITION = enum.auto()
    # No longer produced either (issue 20: an event that needs one not recorded yet is
    # kept and answered PENDING, service.domain.events); kept so that clients matching
    # the names keep compiling. Were: an event of an unknown subscription without plan
    # and period end; a refund of an unknown period; a reversal before its refund.
    SUBSCRIPTION_NOT_YET_KNOWN = enum.auto()
    PERIOD_NOT_YET_KNOWN = enum.auto()
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
    """The request is well formed but the user's state does not allow it. `reason` is a
    PreconditionReason, or an IneligibilityReason when an offer's rule excludes the user
    (its name is machine-readable); `subject` and `description` say what and why."""

    kind = ErrorKind.FAILED_PRECONDITION

    def __init__(self, reason: enum.Enum, subject: str, description: str) -> None:
        self.reason = reason
        self.subject = subject
        self.description = description
        super().__init__(f"{subject}: {description}")


class NotFound(DomainError):
    """The named resource of this user does not exist. Only used for resources of the
    caller's own request (a grant id), so it leaks nothing."""

    kind = ErrorKind.NOT_FOUND


class IdempotencyConflict(DomainError):
    """An idempotency key (event or request id) was used before with a different
    request."""

    kind = ErrorKind.ID_REUSED

    @property
    def public_message(self) -> str:
        return "this id was already used for a different request"


class DeadlineExceeded(ServiceError):
    """The call's time ran out before (or while) the store was called."""

    kind = ErrorKind.DEADLINE_EXCEEDED

    @property
    def public_message(self) -> str:
        return "the deadline passed before an answer"


class TooManyWatches(ServiceError):
    """This worker holds as many open watches as it may."""

    kind = ErrorKind.OVERLOADED


class TooManyChangeStreams(TooManyWatches):
    """This worker holds as many open change streams as it may."""


class Unavailable(ServiceError):
    """Base class of errors that are the service's, not the caller's: the same request
    may succeed later (or on another server)."""


class StoreError(Unavailable):
    """The store cannot serve: start-up reports it in one line (a database that cannot
    be used as configured), and a call that meets it is answered as unavailable."""

    kind = ErrorKind.STORE_UNAVAILABLE

    @property
    def public_message(self) -> str:
        return "the account store is unavailable"


class StoreUnavailable(StoreError):
    """The store cannot be reached or did not answer in time; the caller may retry."""


class WatchClosed(Unavailable):
    """The server is shutting down: the client should resume elsewhere."""

    kind = ErrorKind.SHUTTING_DOWN


class ChangeStreamsClosed(WatchClosed):
    """The server is shutting down, or follows no change feed (yet): resume on another
    server."""
