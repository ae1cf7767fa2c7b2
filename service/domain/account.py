"""Per-user account state, as stored, and the subscription status rules."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class Store(enum.StrEnum):
    WEB = "web"
    APP_STORE = "app_store"
    GOOGLE_PLAY = "google_play"
    PARTNER = "partner"


class SubscriptionStatus(enum.Enum):
    TRIALING = "trialing"
    ACTIVE = "active"
    IN_GRACE_PERIOD = "in_grace_period"
    ON_HOLD = "on_hold"
    PAUSED = "paused"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REVOKED = "revoked"
    # The current period was refunded (a per-transaction refund): no access until a later
    # period is paid for or the refund is reversed (service.domain.events).
    REFUNDED = "refunded"


class GrantKind(enum.Enum):
    PROMOTIONAL = "promotional"
    SUPPORT = "support"
    PARTNER = "partner"


class HouseholdRole(enum.Enum):
    MANAGER = "manager"
    MEMBER = "member"


@dataclass(frozen=True, slots=True)
class Subscription:
    subscription_id: str
    plan_id: str
    status: SubscriptionStatus
    store: Store
    started_at: datetime
    current_period_end: datetime
    # Set while IN_GRACE_PERIOD: the store keeps retrying payment until then.
    grace_period_end: datetime | None = None
    auto_renew: bool = True
    # Occurrence time of the newest store event this subscription reflects; events older
    # than this are recorded but never move the state back.
    last_event_at: datetime | None = None
    offer_id: str | None = None
    # How many kept events (AccountState.subscription_events) this row is the fold of;
    # None for a row not written from them (before they were kept, by RedeemOffer, or by
    # a server of an earlier version during a rollout, which leaves it unset). Not part
    # of the subscription's value: equality ignores it.
    folded_events: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Grant:
    """A promotional, support or partner grant of one feature or of a whole plan."""

    grant_id: str
    kind: GrantKind
    starts_at: datetime
    feature_id: str | None = None
    plan_id: str | None = None
    quota_value: int | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def __post_init__(self) -> None:
        if (self.feature_id is None) == (self.plan_id is None):
            raise ValueError(f"grant {self.grant_id}: exactly one of feature_id, plan_id")


@dataclass(frozen=True, slots=True)
class Redemption:
    offer_id: str
    offer_group: str
    redeemed_at: datetime
    store: Store


@dataclass(frozen=True, slots=True)
class HouseholdMembership:
    """A user's place in a household. On a manager's account, besides their own MANAGER
    membership, each member holds a seat: a MANAGER-role row naming `member_user_id` (the
    roster, where the plan's size limit is enforced; see service.domain.households)."""

    household_id: str
    role: HouseholdRole
    manager_user_id: str
    joined_at: datetime
    left_at: datetime | None = None
    # Set only on a seat of the manager's roster: the member the seat is for.
    member_user_id: str | None = None

    def is_active(self, now: datetime) -> bool:
        return self.joined_at <= now and (self.left_at is None or now < self.left_at)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One accepted subscription event, as kept (service.domain.events folds them into
    the subscription): the event as sent (`payload`, canonical JSON), or a snapshot of
    compacted events of the subscription (`kind` "snapshot")."""

    subscription_id: str
    event_id: str
    kind: str  # the event type's value, or "snapshot"
    occurred_at: datetime
    recorded_at: datetime  # when the service accepted it
    payload: str


@dataclass(frozen=True, slots=True)
class AccountState:
    """Everything stored about one user. `version` increases with every write."""

    user_id: str
    version: int = 0
    home_market: str | None = None
    subscriptions: tuple[Subscription, ...] = ()
    grants: tuple[Grant, ...] = ()
    redemptions: tuple[Redemption, ...] = ()
    memberships: tuple[HouseholdMembership, ...] = ()
    # A verified student keeps the status until this time (re-verification is yearly).
    student_verified_until: datetime | None = None
    # Every accepted event of the user's subscriptions, sorted by (subscription id, fold
    # order): each subscription above is the fold of its own (service.domain.events).
    subscription_events: tuple[StoredEvent, ...] = ()

    @classmethod
    def new(cls, user_id: str) -> AccountState:
        """The state of a user the service has never seen: a free user."""
        return cls(user_id=user_id)


@dataclass(frozen=True, slots=True)
class Household:
    """The household a user belongs to as a member, with the manager's subscriptions.

    A member's household entitlements come from the manager's subscription, so the store
    loads it together with the member's own state.
    """

    household_id: str
    manager_user_id: str
    manager_subscriptions: tuple[Subscription, ...] = field(default_factory=tuple)
    # The manager's state version the subscriptions were read at, so that a read of the
    # member holding the manager's consistency token can tell whether it sees that write.
    manager_version: int = 0


@dataclass(frozen=True, slots=True)
class UserState:
    """What decisions need about a user: their own state and their household, if any."""

    account: AccountState
    household: Household | None = None


class Access(enum.Enum):
    """What a subscription's status means for access right now."""

    ENTITLED = "entitled"
    ENDED = "ended"  # expired, or past its period or grace end
    ON_HOLD = "on_hold"
    PAUSED = "paused"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class SubscriptionAccess:
    access: Access
    # When an entitling subscription stops entitling by itself (period or grace end).
    entitled_until: datetime | None = None


def subscription_access(sub: Subscription, now: datetime) -> SubscriptionAccess:
    """Whether a subscription entitles its plan at `now`, and until when.

    TRIALING, ACTIVE and CANCELED entitle until the current period ends; IN_GRACE_PERIOD
    until the grace period ends. Without a new store event, access ends at that time.
    """
    status = sub.status
    if status in (
        SubscriptionStatus.TRIALING,
        SubscriptionStatus.ACTIVE,
        SubscriptionStatus.CANCELED,
    ):
        end = sub.current_period_end
    elif status is SubscriptionStatus.IN_GRACE_PERIOD:
        end = sub.grace_period_end or sub.current_period_end
    elif status is SubscriptionStatus.ON_HOLD:
        return SubscriptionAccess(Access.ON_HOLD)
    elif status is SubscriptionStatus.PAUSED:
        return SubscriptionAccess(Access.PAUSED)
    elif status in (SubscriptionStatus.REVOKED, SubscriptionStatus.REFUNDED):
        return SubscriptionAccess(Access.REVOKED)
    else:
        return SubscriptionAccess(Access.ENDED)
    if now < end:
        return SubscriptionAccess(Access.ENTITLED, end)
    return SubscriptionAccess(Access.ENDED)


def subscription_ended_at(sub: Subscription, now: datetime) -> datetime | None:
    """When a subscription stopped entitling, or None if it still entitles or is only
    suspended (on hold or paused users are still subscribers, not lapsed ones)."""
    access = subscription_access(sub, now)
    if access.access is Access.ENTITLED or access.access in (Access.ON_HOLD, Access.PAUSED):
        return None
    if sub.status in (
        SubscriptionStatus.EXPIRED,
        SubscriptionStatus.REVOKED,
        SubscriptionStatus.REFUNDED,
    ):
        candidates = [sub.current_period_end]
        if sub.last_event_at is not None:
            candidates.append(sub.last_event_at)
        return min(candidates)
    if sub.status is SubscriptionStatus.IN_GRACE_PERIOD:
        return sub.grace_period_end or sub.current_period_end
    return sub.current_period_end
