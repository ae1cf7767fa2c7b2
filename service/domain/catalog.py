"""The product catalog: features, plans, markets, experiments and offers.

The catalog is configuration as code: `service.catalog` reads and validates the catalog
file and builds these dataclasses. The catalog version is a content hash of the parsed
document (`catalog_version`), reported in responses and metrics.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.domain.account import HouseholdRole
from service.domain.rules import Platform, Rule


class FeatureKind(enum.StrEnum):
    BOOLEAN = "boolean"
    QUOTA = "quota"


class OfferKind(enum.Enum):
    FREE_TRIAL = "free_trial"
    INTRO_PRICE = "intro_price"
    DISCOUNT = "discount"
    WINBACK = "winback"
    STUDENT = "student"


@dataclass(frozen=True, slots=True)
class Feature:
    id: str
    kind: FeatureKind
    description: str = ""
    unit: str = ""


@dataclass(frozen=True, slots=True)
class PlanFeature:
    feature_id: str
    # For QUOTA features, the amount the plan carries.
    value: int | None = None
    # Household roles that get the feature (audiobook hours only go to the plan manager).
    roles: frozenset[HouseholdRole] = frozenset(HouseholdRole)


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    name: str
    premium: bool
    household_size: int
    features: Mapping[str, PlanFeature]
    # A student plan: its subscriptions entitle only while the subscriber's student status
    # is verified (AccountState.student_verified_until); the store keeps billing it.
    requires_verified_student: bool = False


@dataclass(frozen=True, slots=True)
class Market:
    country: str
    currency: str
    # Monthly price of each plan sold in the market, in minor units.
    plan_prices: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class ExperimentArm:
    name: str
    weight: int
    shows_offer: bool


@dataclass(frozen=True, slots=True)
class Experiment:
    id: str
    arms: tuple[ExperimentArm, ...]

    def assign(self, user_id: str) -> ExperimentArm:
        """The user's arm: a stable hash of experiment and user, so that every process and
        replica assigns the same arm without storing anything."""
        digest = hashlib.sha256(f"{self.id}\x00{user_id}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") % sum(arm.weight for arm in self.arms)
        for arm in self.arms:
            if point < arm.weight:
                return arm
            point -= arm.weight
        raise AssertionError("unreachable: weights are positive")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class Offer:
    id: str
    plan_id: str
    kind: OfferKind
    duration_days: int
    group: str
    # Offer price per market in minor units; the offer exists only in these markets.
    prices: Mapping[str, int]
    rules: tuple[Rule, ...] = ()
    platforms: frozenset[Platform] = frozenset(Platform)
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    priority: int = 0
    experiment: Experiment | None = None


@dataclass(frozen=True, slots=True)
class Catalog:
    version: str
    free_plan_id: str
    features: Mapping[str, Feature]
    plans: Mapping[str, Plan]
    markets: Mapping[str, Market]
    offers: tuple[Offer, ...]
    premium_plan_ids: frozenset[str] = field(default=frozenset())
    # Plans whose features household members share (household size > 1).
    household_plan_ids: frozenset[str] = field(default=frozenset())
    # A member who left a household joins no other one for this many days (0: no limit),
    # so that household plans cannot be shared around by hopping between households.
    household_join_cooldown_days: int = 0


def catalog_version(raw: Any) -> str:
    """The version of a parsed catalog document: a hash of its content, so formatting,
    comments and YAML anchors do not change it."""
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
