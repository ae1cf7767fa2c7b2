"""The write use cases, by area: each validates its command, runs idempotent
transactions through the repository (service.usecases.writes.core), drops this
process's cache entry, and answers with a consistency token for later reads.

- subscription_events: RecordSubscriptionEvent
- grants: GrantEntitlement, RevokeEntitlement
- redemption: RedeemOffer
- households: CreateHousehold, AddHouseholdMember, RemoveHouseholdMember
- students: RecordStudentVerification, RevokeStudentVerification
"""

from service.usecases.writes.core import WriteCore, fingerprint
from service.usecases.writes.grants import GrantAnswer, GrantEntitlement, RevokeEntitlement
from service.usecases.writes.households import (
    AddHouseholdMember,
    CreateHousehold,
    HouseholdAnswer,
    MembershipAnswer,
    RemoveHouseholdMember,
)
from service.usecases.writes.redemption import RedeemAnswer, RedeemOffer
from service.usecases.writes.service import WriteService
from service.usecases.writes.students import (
    RecordStudentVerification,
    RevokeStudentVerification,
    StudentAnswer,
)
from service.usecases.writes.subscription_events import EventAnswer, RecordSubscriptionEvent

__all__ = [
    "AddHouseholdMember",
    "CreateHousehold",
    "EventAnswer",
    "GrantAnswer",
    "GrantEntitlement",
    "HouseholdAnswer",
    "MembershipAnswer",
    "RecordStudentVerification",
    "RecordSubscriptionEvent",
    "RedeemAnswer",
    "RedeemOffer",
    "RemoveHouseholdMember",
    "RevokeEntitlement",
    "RevokeStudentVerification",
    "StudentAnswer",
    "WriteCore",
    "WriteService",
    "fingerprint",
]
