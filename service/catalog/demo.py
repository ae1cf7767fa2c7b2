"""Demo users in the situations the service must tell apart, as the writes that put them
there: store events, grants, a household and a student verification, which seeding runs
through the same write use cases as everything else (service.cli.store_commands.
write_demo), so each user's history tells why they have what they have. Times are
relative to the moment of seeding, so the demo means the same whenever it is seeded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from service.domain.account import GrantKind, Store
from service.domain.events import EventType, SubscriptionEvent
from service.domain.grants import GrantRequest

DAY = timedelta(days=1)
DEMO_PREFIX = "demo-"
# The family demo's household: created and joined with these request ids on every
# seeding, so seeding again keeps the one household (those writes are replays).
HOUSEHOLD_REQUEST = "demo-household"
HOUSEHOLD_MEMBER_REQUEST = "demo-household-member"


@dataclass(frozen=True, slots=True)
class DemoEvent:
    """A store event of `user_id` (RecordSubscriptionEvent)."""

    user_id: str
    event: SubscriptionEvent


@dataclass(frozen=True, slots=True)
class DemoGrant:
    """GrantEntitlement."""

    request_id: str
    user_id: str
    grant: GrantRequest


@dataclass(frozen=True, slots=True)
class DemoHousehold:
    """CreateHousehold by `manager_user_id`, then AddHouseholdMember of `member_user_id`
    to the household it created."""

    request_id: str
    manager_user_id: str
    member_request_id: str
    member_user_id: str


@dataclass(frozen=True, slots=True)
class DemoStudent:
    """RecordStudentVerification."""

    request_id: str
    user_id: str
    verified_until: datetime
    provider_reference: str


DemoWrite = DemoEvent | DemoGrant | DemoHousehold | DemoStudent


@dataclass(frozen=True, slots=True)
class DemoUser:
    user_id: str
    situation: str  # one line: what the user has, and why


DEMO_USERS = (
    DemoUser("demo-free", "free tier; a 30-day promotional hi-fi grant ended a month ago"),
    DemoUser("demo-trial", "Premium Individual trial from the App Store, 20 days left"),
    DemoUser("demo-active", "Premium Individual on the web, renewed 18 days ago"),
    DemoUser("demo-grace", "Premium Individual on Google Play, renewal failed: grace period"),
    DemoUser("demo-canceled", "Premium Individual on the web, canceled: access to period end"),
    DemoUser("demo-lapsed", "trial, then Premium Individual, expired 45 days ago"),
    DemoUser("demo-on-hold", "Premium Individual on Google Play, on hold after grace ran out"),
    DemoUser("demo-family-manager", "Premium Family on the web, manages the demo household"),
    DemoUser("demo-family-member", "member of the demo household: Premium Family features"),
    DemoUser("demo-student", "verified student (200 more days): student offers"),
    DemoUser("demo-promo", "promotional hi-fi grant, 27 more days"),
)
DEMO_USER_IDS = tuple(user.user_id for user in DEMO_USERS)


def demo_writes(now: datetime, *, run: str = "") -> list[DemoWrite]:
    """The writes that put the demo users (DEMO_USERS) in their situations at `now`, in
    the order to run them.

    `run` tells seedings apart: empty for the first one; another seeding of the same
    store (`seed-demo --reseed`) passes its own (say, a timestamp), so its events and
    requests are new ones rather than replays with other content, and each subscription
    it starts is a new one (`sub-active-<run>`): the demo users then hold the situations
    as of this `now` too, and their history shows both seedings. The household's writes
    keep their request ids, so seeding again replays them (one household)."""
    suffix = f"-{run}" if run else ""
    writes: list[DemoWrite] = []

    def ago(days: float) -> datetime:
        return now - days * DAY

    def events(
        user_id: str, subscription: str, store: Store, plan_id: str, market: str
    ) -> Callable[..., None]:
        """A recorder of the store events of one subscription of `user_id`."""
        subscription_id = f"{subscription}{suffix}"

        def record(kind: EventType, days_ago: float, **fields: Any) -> None:
            starts = kind in (EventType.PURCHASED, EventType.TRIAL_STARTED)
            event = SubscriptionEvent(
                event_id=f"{subscription_id}-{kind.value}-{days_ago:g}d",
                subscription_id=subscription_id,
                store=store,
                type=kind,
                occurred_at=ago(days_ago),
                plan_id=plan_id if starts else None,
                market=market,
                **fields,
            )
            writes.append(DemoEvent(user_id, event))

        return record

    def hifi_grant(user_id: str, started_days_ago: int, ends_in_days: int) -> None:
        request = GrantRequest(
            kind=GrantKind.PROMOTIONAL,
            feature_id="high_fidelity_audio",
            plan_id=None,
            quota_value=0,
            starts_at=ago(started_days_ago),
            expires_at=now + ends_in_days * DAY,
        )
        writes.append(DemoGrant(f"{user_id}-promo{suffix}", user_id, request))

    individual, family = "premium_individual", "premium_family"
    trial_offer = "premium-individual-trial-1m"

    hifi_grant("demo-free", 60, -30)

    trial = events("demo-trial", "sub-trial", Store.APP_STORE, individual, "SE")
    trial(EventType.TRIAL_STARTED, 10, current_period_end=now + 20 * DAY, offer_id=trial_offer)

    active = events("demo-active", "sub-active", Store.WEB, individual, "GB")
    active(EventType.PURCHASED, 400, current_period_end=ago(370))
    active(EventType.RENEWED, 18, current_period_end=now + 12 * DAY)

    grace = events("demo-grace", "sub-grace", Store.GOOGLE_PLAY, individual, "DE")
    grace(EventType.PURCHASED, 200, current_period_end=ago(170))
    grace(EventType.RENEWED, 32, current_period_end=ago(2))
    grace(EventType.RENEWAL_FAILED, 2, grace_period_end=now + 5 * DAY)

    canceled = events("demo-canceled", "sub-canceled", Store.WEB, individual, "FR")
    canceled(EventType.PURCHASED, 90, current_period_end=ago(60))
    canceled(EventType.RENEWED, 22, current_period_end=now + 8 * DAY)
    canceled(EventType.CANCELED, 1)

    lapsed = events("demo-lapsed", "sub-lapsed", Store.APP_STORE, individual, "US")
    lapsed(EventType.TRIAL_STARTED, 400, current_period_end=ago(370), offer_id=trial_offer)
    lapsed(EventType.RENEWED, 75, current_period_end=ago(45))
    lapsed(EventType.EXPIRED, 45)

    on_hold = events("demo-on-hold", "sub-on-hold", Store.GOOGLE_PLAY, individual, "BR")
    on_hold(EventType.PURCHASED, 300, current_period_end=ago(270))
    on_hold(EventType.RENEWED, 40, current_period_end=ago(10))
    on_hold(EventType.RENEWAL_FAILED, 10, grace_period_end=ago(3))
    on_hold(EventType.ON_HOLD, 3)

    manager = events("demo-family-manager", "sub-family", Store.WEB, family, "SE")
    manager(EventType.PURCHASED, 700, current_period_end=ago(670))
    manager(EventType.RENEWED, 10, current_period_end=now + 20 * DAY)
    writes.append(
        DemoHousehold(
            HOUSEHOLD_REQUEST, "demo-family-manager", HOUSEHOLD_MEMBER_REQUEST, "demo-family-member"
        )
    )

    writes.append(
        DemoStudent(
            f"demo-student-verification{suffix}", "demo-student", now + 200 * DAY, "demo-provider"
        )
    )

    hifi_grant("demo-promo", 3, 27)
    return writes
