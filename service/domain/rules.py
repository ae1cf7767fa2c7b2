"""Declarative offer eligibility rules, evaluated by pure functions.

Each rule answers eligible or not *and why* (a machine-readable reason plus a short
detail), and when its answer could change by itself (`recheck_at`), so that an offers
answer can say how long it holds. Each rule also parses its own argument in the catalog
(`parse`); `RULE_TYPES` maps the rules' catalog names to them.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar, Protocol, Self

from service.domain.account import (
    Access,
    AccountState,
    Grant,
    HouseholdMembership,
    HouseholdRole,
    Subscription,
    UserState,
    subscription_access,
    subscription_ended_at,
)

# A market: an ISO 3166-1 alpha-2 country code.
COUNTRY_CODE = re.compile(r"^[A-Z]{2}$")


class Platform(enum.Enum):
    WEB = "web"
    IOS = "ios"
    ANDROID = "android"
    DESKTOP = "desktop"


class IneligibilityReason(enum.Enum):
    HAD_PREMIUM_BEFORE = "had_premium_before"
    GROUP_ALREADY_REDEEMED = "group_already_redeemed"
    NEVER_SUBSCRIBED = "never_subscribed"
    CURRENTLY_SUBSCRIBED = "currently_subscribed"
    NOT_LAPSED_LONG_ENOUGH = "not_lapsed_long_enough"
    CURRENT_PLAN_NOT_ELIGIBLE = "current_plan_not_eligible"
    MARKET_NOT_ELIGIBLE = "market_not_eligible"
    PLATFORM_NOT_ELIGIBLE = "platform_not_eligible"
    STUDENT_NOT_VERIFIED = "student_not_verified"
    HOUSEHOLD_COOLDOWN = "household_cooldown"
    OUTSIDE_VALIDITY_WINDOW = "outside_validity_window"
    EXPERIMENT_ARM = "experiment_arm"


@dataclass(frozen=True, slots=True)
class AccountFacts:
    """What the rules need to know about a user, derived once per evaluation."""

    ever_premium: bool
    redeemed_groups: frozenset[str]
    # Entitled to a premium plan now, or suspended (on hold, paused): not lapsed.
    currently_subscribed: bool
    # When the last premium access ended, for users who had premium and are lapsed.
    lapsed_since: datetime | None
    current_plan_id: str
    student_verified_until: datetime | None
    # Latest join or leave of any household (for the household-hopping cooldown).
    last_household_change: datetime | None
    # Earliest future time at which one of the facts above changes by itself.
    changes_at: datetime | None


def account_facts(
    user: UserState,
    premium_plan_ids: frozenset[str],
    free_plan_id: str,
    now: datetime,
    household_plan_ids: frozenset[str],
) -> AccountFacts:
    """`household_plan_ids`: the plans shared with household members (household size > 1);
    a manager's subscription to any other plan is not the member's plan."""
    account = user.account
    premium_subs = [s for s in account.subscriptions if s.plan_id in premium_plan_ids]
    standing = _own_standing(premium_subs, now)
    if standing.plan_until is None and user.household is not None:
        _add_household_plan(
            standing,
            user.household.manager_subscriptions,
            premium_plan_ids & household_plan_ids,
            now,
        )
    currently_subscribed = standing.plan_until is not None or standing.suspended
    change_times = [
        *standing.changes,
        *_grant_changes(account.grants, now),
        *_student_change(account.student_verified_until, now),
    ]
    return AccountFacts(
        ever_premium=_ever_premium(account, premium_subs, premium_plan_ids, now),
        redeemed_groups=frozenset(r.offer_group for r in account.redemptions),
        currently_subscribed=currently_subscribed,
        lapsed_since=None if currently_subscribed else max(standing.ended, default=None),
        current_plan_id=free_plan_id if standing.plan_id is None else standing.plan_id,
        student_verified_until=account.student_verified_until,
        last_household_change=_last_household_change(account.memberships),
        changes_at=min(change_times, default=None),
    )


@dataclass(slots=True)
class _Standing:
    """Where a user's premium subscriptions stand at one moment (account_facts' steps)."""

    # The current premium plan and when its access ends by itself; None: none entitles.
    plan_id: str | None = None
    plan_until: datetime | None = None
    # A premium subscription is on hold or paused: still a subscriber, not lapsed.
    suspended: bool = False
    # When each premium subscription that stopped entitling stopped.
    ended: list[datetime] = field(default_factory=list)
    # When an entitling subscription stops entitling by itself.
    changes: list[datetime] = field(default_factory=list)


def _own_standing(premium_subs: Iterable[Subscription], now: datetime) -> _Standing:
    standing = _Standing()
    for sub in premium_subs:
        access = subscription_access(sub, now)
        if access.access is Access.ENTITLED:
            # Several entitling subscriptions are rare (a store switch); the one lasting
            # longest is the user's current plan.
            assert access.entitled_until is not None
            standing.changes.append(access.entitled_until)
            if standing.plan_until is None or access.entitled_until > standing.plan_until:
                standing.plan_id, standing.plan_until = sub.plan_id, access.entitled_until
        elif access.access in (Access.ON_HOLD, Access.PAUSED):
            standing.suspended = True
        end = subscription_ended_at(sub, now)
        if end is not None:
            standing.ended.append(end)
    return standing


def _add_household_plan(
    standing: _Standing,
    manager_subscriptions: Iterable[Subscription],
    shared_premium_plan_ids: frozenset[str],
    now: datetime,
) -> None:
    """A member without a plan of their own has the manager's shared premium plan."""
    for sub in manager_subscriptions:
        access = subscription_access(sub, now)
        if access.access is Access.ENTITLED and sub.plan_id in shared_premium_plan_ids:
            assert access.entitled_until is not None
            standing.changes.append(access.entitled_until)
            standing.plan_id, standing.plan_until = sub.plan_id, access.entitled_until


def _grant_changes(grants: Iterable[Grant], now: datetime) -> list[datetime]:
    """When each grant starts, or ends, by itself."""
    changes = []
    for grant in grants:
        if grant.starts_at > now:
            changes.append(grant.starts_at)
        elif grant.expires_at is not None and grant.expires_at > now:
            changes.append(grant.expires_at)
    return changes


def _student_change(verified_until: datetime | None, now: datetime) -> list[datetime]:
    return [verified_until] if verified_until is not None and verified_until > now else []


def _ever_premium(
    account: AccountState,
    premium_subs: Collection[Subscription],
    premium_plan_ids: frozenset[str],
    now: datetime,
) -> bool:
    """A premium subscription (trials count), a premium plan grant once started (unless
    revoked before it started: a grant revoked later was held, as a refunded subscription
    was), or a household membership as a member."""
    return (
        bool(premium_subs)
        or any(
            g.plan_id in premium_plan_ids
            and g.starts_at <= now
            and (g.revoked_at is None or g.revoked_at > g.starts_at)
            for g in account.grants
        )
        or any(m.role is HouseholdRole.MEMBER for m in account.memberships)
    )


def _last_household_change(memberships: Iterable[HouseholdMembership]) -> datetime | None:
    """The user's latest own join or leave; seats of a manager's roster are the members'."""
    own = [m for m in memberships if m.member_user_id is None]
    return max(
        [m.joined_at for m in own] + [m.left_at for m in own if m.left_at is not None],
        default=None,
    )


@dataclass(frozen=True, slots=True)
class RuleContext:
    facts: AccountFacts
    offer_group: str
    market: str
    platform: Platform
    now: datetime


@dataclass(frozen=True, slots=True)
class RuleResult:
    eligible: bool
    reason: IneligibilityReason | None = None
    detail: str = ""
    # When this result can change by itself; None when only a new event can change it.
    recheck_at: datetime | None = None


ELIGIBLE = RuleResult(eligible=True)


def _ineligible(
    reason: IneligibilityReason, detail: str, recheck_at: datetime | None = None
) -> RuleResult:
    return RuleResult(eligible=False, reason=reason, detail=detail, recheck_at=recheck_at)


class RuleArgumentError(ValueError):
    """A rule's argument in the catalog is invalid; `problems` lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True, slots=True)
class RuleScope:
    """What a rule's argument may name: the plans and markets of the catalog it is in."""

    plan_ids: Collection[str]
    markets: Collection[str]


class Rule(Protocol):
    """An eligibility rule. `name` is its key in the catalog file."""

    name: ClassVar[str]

    @classmethod
    def parse(cls, argument: object, scope: RuleScope) -> Self:
        """The rule from its argument in the catalog file (None after a bare name);
        raises RuleArgumentError listing every problem of the argument."""
        ...

    def evaluate(self, ctx: RuleContext) -> RuleResult: ...


def _no_argument(name: str, argument: object) -> None:
    if argument not in (None, True, {}):
        raise RuleArgumentError([f"'{name}' takes no argument"])


def _days(name: str, argument: object) -> int:
    if isinstance(argument, bool) or not isinstance(argument, int) or argument < 1:
        raise RuleArgumentError([f"'{name}' takes a number of days >= 1, got {argument!r}"])
    return argument


def _non_empty_list(name: str, argument: object) -> list[object]:
    if not isinstance(argument, list) or not argument:
        raise RuleArgumentError([f"'{name}' takes a non-empty list, got {argument!r}"])
    return argument


@dataclass(frozen=True, slots=True)
class NeverHadPremium:
    """Only for users who never had a premium plan, on any store (trials count)."""

    name: ClassVar[str] = "never_had_premium"

    @classmethod
    def parse(cls, argument: object, scope: RuleScope) -> Self:
        _no_argument(cls.name, argument)
        return cls()

    def evaluate(self, ctx: RuleContext) -> RuleResult:
        if ctx.facts.ever_premium:
            return _ineligible(
                IneligibilityReason.HAD_PREMIUM_BEFORE, "user had a premium plan before"
            )
        return ELIGIBLE


@dataclass(frozen=True, slots=True)
class GroupNotRedeemed:
    """Only for users who never redeemed an offer of the offer's group."""

    name: ClassVar[str] = "group_not_redeemed"

    @classmethod
    def parse(cls, argument: object, scope: RuleScope) -> Self:
        _no_argument(cls.name, argument)
        return cls()

    def evaluate(self, ctx: RuleContext) -> RuleResult:
        if ctx.offer_group in ctx.facts.redeemed_groups:
            return _ineligible(
                IneligibilityReason.GROUP_ALREADY_REDEEMED,
                f"an offer of group '{ctx.offer_group}' was already redeemed",
            )
        return ELIGIBLE


@dataclass(frozen=True, slots=True)
class LapsedForDays:
    """Only for former premium users whose access ended at least `days` ago."""

    days: int
    name: ClassVar[str] = "lapsed_for_days"

    @classmethod
    def parse(cls, argument: object, scope: RuleScope) -> Self:
        return cls(_days(cls.name, argument))

    def evaluate(self, ctx: RuleContext) -> RuleResult:
        facts = ctx.facts
        if facts.currently_subscribed:
            return _ineligible(
                IneligibilityReason.CURRENTLY_SUBSCRIBED, "user still has a premium plan"
            )
        if facts.lapsed_since is None:
            return _ineligible(
                IneligibilityReason.NEVER_SUBSCRIBED, "user never had a premium subscription"
            )
        eligible_from = facts.lapsed_since + timedelta(days=self.days)
        if ctx.now < eligible_from:
            return _ineligible(
                IneligibilityReason.NOT_LAPSED_LONG_ENOUGH,
                f"lapsed less than {self.days} days ago",
                recheck_at=eligible_from,
            )
        return ELIGIBLE


@dataclass(frozen=True, slots=True)
class CurrentPlanIn:
    """Only for users whose current plan is one of `plan_ids` ("free" for free users)."""

    plan_ids: frozenset[str]
    name: ClassVar[str] = "current_plan_in"

    @classmethod
    def parse(cls, argument: object, scope: RuleScope) -> Self:
        plan_ids = _non_empty_list(cls.name, argument)
        problems = [
            f"unknown plan {plan_id!r}"
            for plan_id in plan_ids
            if not isinstance(plan_id, str) or plan_id not in scope.plan_ids
        ]
        if problems:
            raise RuleArgumentError(problems)
        return cls(frozenset(str(plan_id) for plan_id in plan_ids))

    def evaluate(self, ctx: RuleContext) -> RuleResult:
        if ctx.facts.current_plan_id not in self.plan_ids:
            return _ineligible(
                IneligibilityReason.CURRENT_PLAN_NOT_ELIGIBLE,
                f"current plan '{ctx.facts.current_plan_id}' is not one of {sorted(self.plan_ids)}",
            )
        return ELIGIBLE


@dataclass(frozen=True, slots=True)
class MarketIn:
    """Only in the listed markets (ISO 3166-1 alpha-2)."""

    markets: frozenset[str]
    name: ClassVar[str] = "market_in"

    @classmethod
    def parse(cls, argument: object, scope: RuleScope) -> Self:
        countries = _non_empty_list(cls.name, argument)
        problems = []
        for country in countries:
            if not isinstance(country, str) or not COUNTRY_CODE.fullmatch(country):
                problems.append(f"not an ISO 3166-1 alpha-2 code: {country!r}")
            elif country not in scope.markets:
                problems.append(f"unknown market '{country}'")
        if problems:
            raise RuleArgumentError(problems)
        return cls(frozenset(str(country) for country in countries))

    def evaluate(self, ctx: RuleContext) -> RuleResult:
        if ctx.market not in self.markets:
            return _ineligible(
                IneligibilityReason.MARKET_NOT_ELIGIBLE, f"not offered in market {ctx.market}"
            )
        return ELIGIBLE


@dataclass(frozen=True, slots=True)
class PlatformIn:
    """Only on the listed platforms."""

    platforms: frozenset[Platform]
    name: ClassVar[str] = "platform_in"

    @classmethod
    def parse(cls, argument: object, scope: RuleScope) -> Self:
        platforms: set[Platform] = set()
        problems = []
        for value in _non_empty_list(cls.name, argument):
            try:
                platforms.add(Platform(value))
            except ValueError:
                allowed = ", ".join(platform.value for platform in Platform)
                problems.append(f"'{cls.name}' must be one of {allowed}, got {value!r}")
        if problems:
            raise RuleArgumentError(problems)
        return cls(frozenset(platforms))

    def evaluate(self, ctx: RuleContext) -> RuleResult:
        if ctx.platform not in self.platforms:
            return _ineligible(
                IneligibilityReason.PLATFORM_NOT_ELIGIBLE,
                f"not offered on {ctx.platform.value}",
            )
        return ELIGIBLE


@dataclass(frozen=True, slots=True)
class VerifiedStudent:
    """Only for users whose student status is verified now."""

    name: ClassVar[str] = "verified_student"

    @classmethod
    def parse(cls, argument: object, scope: RuleScope) -> Self:
        _no_argument(cls.name, argument)
        return cls()

    def evaluate(self, ctx: RuleContext) -> RuleResult:
        until = ctx.facts.student_verified_until
        if until is None or until <= ctx.now:
            return _ineligible(
                IneligibilityReason.STUDENT_NOT_VERIFIED, "student status not verified"
            )
        return RuleResult(eligible=True, recheck_at=until)


@dataclass(frozen=True, slots=True)
class NotInHouseholdCooldown:
    """Not for users who joined or left a household in the last `days` days, so that
    household plan offers cannot be farmed by hopping between households."""

    days: int
    name: ClassVar[str] = "not_in_household_cooldown"

    @classmethod
    def parse(cls, argument: object, scope: RuleScope) -> Self:
        return cls(_days(cls.name, argument))

    def evaluate(self, ctx: RuleContext) -> RuleResult:
        changed = ctx.facts.last_household_change
        if changed is None:
            return ELIGIBLE
        cooldown_end = changed + timedelta(days=self.days)
        if ctx.now < cooldown_end:
            return _ineligible(
                IneligibilityReason.HOUSEHOLD_COOLDOWN,
                f"joined or left a household less than {self.days} days ago",
                recheck_at=cooldown_end,
            )
        return ELIGIBLE


_RULES: tuple[type[Rule], ...] = (
    NeverHadPremium,
    GroupNotRedeemed,
    LapsedForDays,
    CurrentPlanIn,
    MarketIn,
    PlatformIn,
    VerifiedStudent,
    NotInHouseholdCooldown,
)
# Every rule by its name in the catalog file, in the order error messages list them.
RULE_TYPES: dict[str, type[Rule]] = {rule.name: rule for rule in _RULES}


def first_failure(rules: Iterable[Rule], ctx: RuleContext) -> tuple[RuleResult, list[datetime]]:
    """Evaluates rules in order; returns the first failing result (or ELIGIBLE) and the
    times at which any evaluated rule's answer could change."""
    recheck: list[datetime] = []
    for rule in rules:
        result = rule.evaluate(ctx)
        if result.recheck_at is not None:
            recheck.append(result.recheck_at)
        if not result.eligible:
            return result, recheck
    return ELIGIBLE, recheck
