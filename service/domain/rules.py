"""Declarative offer eligibility rules, evaluated by pure functions.

Each rule answers eligible or not *and why* (a machine-readable reason plus a short
detail), and when its answer could change by itself (`recheck_at`), so that an offers
answer can say how long it holds. Each rule also parses its own argument in the catalog
(`parse`); `RULE_TYPES` maps the rules' catalog names to them. What the rules know about
the user is derived in service.domain.facts.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, Protocol, Self

from service.domain.facts import AccountFacts

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
