"""Validation of a parsed catalog document, and building the Catalog from it.

Every problem is reported with the path of the bad entry (e.g. "offers[2] (premium-trial):
unknown plan 'premium'"), all at once, so a catalog change is fixed in one round.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from service.catalog.values import ValueReader
from service.domain.account import HouseholdRole
from service.domain.catalog import (
    Catalog,
    Experiment,
    ExperimentArm,
    Feature,
    FeatureKind,
    Market,
    Offer,
    OfferKind,
    Plan,
    PlanFeature,
    catalog_version,
)
from service.domain.rules import (
    COUNTRY_CODE,
    RULE_TYPES,
    Platform,
    Rule,
    RuleArgumentError,
    RuleScope,
)

CURRENCY_CODE = re.compile(r"^[A-Z]{3}$")


class CatalogError(ValueError):
    """The catalog file is invalid; `problems` lists every bad entry with its path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid catalog:\n  " + "\n  ".join(problems))


def parse_catalog(raw: Any) -> Catalog:
    """Validates a parsed catalog document and builds the Catalog, or raises CatalogError."""
    parser = _Parser()
    catalog = parser.catalog(raw)
    if parser.problems:
        raise CatalogError(parser.problems)
    assert catalog is not None
    return catalog


class _Parser(ValueReader):
    """The catalog's shape: features, plans, markets, offers and their rules."""

    def catalog(self, raw: Any) -> Catalog | None:
        doc = self.mapping(raw, "catalog")
        self.check_keys(
            doc,
            "catalog",
            {
                "schema_version", "free_plan", "features", "plans", "markets", "offers",
                "household_join_cooldown_days",
            },
        )  # fmt: skip
        if type(doc.get("schema_version")) is not int or doc.get("schema_version") != 1:
            self.problem("schema_version", f"must be 1, got {doc.get('schema_version')!r}")
        features = self.features(doc)
        plans = self.plans(doc, features)
        free_plan_id = doc.get("free_plan")
        if not isinstance(free_plan_id, str) or free_plan_id not in plans:
            self.problem("free_plan", f"must name a plan of the catalog, got {free_plan_id!r}")
        elif plans[free_plan_id].premium:
            self.problem("free_plan", f"plan '{free_plan_id}' is premium")
        markets = self.markets(doc, plans)
        offers = self.offers(doc, plans, markets)
        join_cooldown_days = self.integer(
            doc, "household_join_cooldown_days", "household_join_cooldown_days", default=0
        )
        if self.problems:
            return None
        return Catalog(
            version=catalog_version(raw),
            free_plan_id=str(free_plan_id),
            features=features,
            plans=plans,
            markets=markets,
            offers=offers,
            premium_plan_ids=frozenset(p.id for p in plans.values() if p.premium),
            household_plan_ids=frozenset(p.id for p in plans.values() if p.household_size > 1),
            household_join_cooldown_days=join_cooldown_days,
        )

    def features(self, doc: dict[str, Any]) -> dict[str, Feature]:
        features: dict[str, Feature] = {}
        for where, entry in self.entries(doc, "features"):
            self.check_keys(entry, where, {"id", "kind", "description", "unit"})
            feature_id = self.identifier(entry, "id", where)
            kind = self.enum_value(FeatureKind, entry.get("kind"), where, "kind")
            if feature_id in features:
                self.problem(where, f"duplicate feature id '{feature_id}'")
            description = self.text(entry, "description", where)
            unit = self.text(entry, "unit", where)
            if feature_id and kind is not None:
                if kind is FeatureKind.QUOTA and not unit:
                    self.problem(where, "a quota feature needs a 'unit'")
                features[feature_id] = Feature(feature_id, kind, description, unit)
        if not features:
            self.problem("features", "the catalog needs at least one feature")
        return features

    def plans(self, doc: dict[str, Any], features: Mapping[str, Feature]) -> dict[str, Plan]:
        plans: dict[str, Plan] = {}
        for where, entry in self.entries(doc, "plans"):
            self.check_keys(
                entry,
                where,
                {
                    "id",
                    "name",
                    "premium",
                    "household_size",
                    "requires_verified_student",
                    "features",
                },
            )
            plan_id = self.identifier(entry, "id", where)
            if plan_id in plans:
                self.problem(where, f"duplicate plan id '{plan_id}'")
            name = self.text(entry, "name", where) or plan_id
            premium = entry.get("premium")
            if not isinstance(premium, bool):
                self.problem(where, f"'premium' must be true or false, got {premium!r}")
            household_size = self.integer(entry, "household_size", where, default=1, low=1)
            student_only = self.student_only(entry, where, household_size)
            plan_features = self.plan_features(entry.get("features") or {}, where, features)
            if plan_id:
                plans[plan_id] = Plan(
                    plan_id,
                    name,
                    bool(premium),
                    household_size,
                    plan_features,
                    requires_verified_student=student_only,
                )
        if not plans:
            self.problem("plans", "the catalog needs at least one plan")
        return plans

    def student_only(self, entry: dict[str, Any], where: str, household_size: int) -> bool:
        """A plan's `requires_verified_student`: a flag, never on a household plan."""
        student_only = entry.get("requires_verified_student", False)
        if not isinstance(student_only, bool):
            self.problem(
                where,
                f"'requires_verified_student' must be true or false, got {student_only!r}",
            )
        elif student_only and household_size > 1:
            self.problem(where, "a plan requiring a verified student is not a household plan")
        return student_only is True

    def plan_features(
        self, raw: Any, where: str, features: Mapping[str, Feature]
    ) -> dict[str, PlanFeature]:
        """A plan's `features`: catalog features, each with its settings in this plan."""
        plan_features: dict[str, PlanFeature] = {}
        if not isinstance(raw, dict):
            self.problem(where, "'features' must map feature ids to their settings")
            return plan_features
        for feature_id, settings in raw.items():
            fwhere = f"{where}.features.{feature_id}"
            feature = features.get(feature_id)
            if feature is None:
                self.problem(fwhere, f"unknown feature '{feature_id}'")
                continue
            plan_features[feature_id] = self.plan_feature(feature, settings, fwhere)
        return plan_features

    def plan_feature(self, feature: Feature, raw: Any, where: str) -> PlanFeature:
        """One feature's settings in a plan: its quota (quota features only), and the
        household roles having it (every role unless listed)."""
        settings = self.mapping(raw or {}, where)
        self.check_keys(settings, where, {"value", "roles"})
        value: int | None = None
        if feature.kind is FeatureKind.QUOTA:
            value = self.integer(settings, "value", where, low=1)
        elif "value" in settings:
            self.problem(where, "a boolean feature takes no 'value'")
        roles = frozenset(HouseholdRole)
        if "roles" in settings:
            parsed = [
                self.enum_value(HouseholdRole, r, where, "roles")
                for r in self.listed(settings["roles"], where, "roles")
            ]
            roles = frozenset(r for r in parsed if r is not None)
            if not roles:
                self.problem(where, "'roles' must name at least one role")
        return PlanFeature(feature.id, value, roles)

    def markets(self, doc: dict[str, Any], plans: Mapping[str, Plan]) -> dict[str, Market]:
        markets: dict[str, Market] = {}
        for where, entry in self.entries(doc, "markets"):
            self.check_keys(entry, where, {"country", "currency", "prices"})
            country = entry.get("country")
            if not isinstance(country, str) or not COUNTRY_CODE.fullmatch(country):
                self.problem(where, f"'country' must be ISO 3166-1 alpha-2, got {country!r}")
                continue
            if country in markets:
                self.problem(where, f"duplicate market '{country}'")
            currency = entry.get("currency")
            if not isinstance(currency, str) or not CURRENCY_CODE.match(currency):
                self.problem(where, f"'currency' must be ISO 4217, got {currency!r}")
            prices = self.prices(entry.get("prices"), f"{where}.prices")
            for plan_id in prices:
                if plan_id not in plans:
                    self.problem(f"{where}.prices", f"unknown plan '{plan_id}'")
            markets[country] = Market(country, str(currency), prices)
        if not markets:
            self.problem("markets", "the catalog needs at least one market")
        return markets

    def prices(self, raw: Any, where: str) -> dict[str, int]:
        prices: dict[str, int] = {}
        for key, amount in self.mapping(raw, where).items():
            if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
                self.problem(where, f"price of '{key}' must be a whole number of minor units")
                continue
            prices[str(key)] = amount
        return prices

    def offers(
        self, doc: dict[str, Any], plans: Mapping[str, Plan], markets: Mapping[str, Market]
    ) -> tuple[Offer, ...]:
        offers: list[Offer] = []
        seen: set[str] = set()
        allowed = {
            "id", "plan", "kind", "duration_days", "group", "prices", "eligibility",
            "platforms", "valid_from", "valid_until", "priority", "experiment",
        }  # fmt: skip
        for where, entry in self.entries(doc, "offers"):
            self.check_keys(entry, where, allowed)
            offer_id = self.identifier(entry, "id", where)
            if offer_id in seen:
                self.problem(where, f"duplicate offer id '{offer_id}'")
            seen.add(offer_id)
            plan_id = str(entry.get("plan"))
            if plan_id not in plans:
                self.problem(where, f"unknown plan {plan_id!r}")
            elif not plans[plan_id].premium:
                self.problem(where, f"plan '{plan_id}' is not premium")
            kind = self.enum_value(OfferKind, entry.get("kind"), where, "kind")
            duration = self.integer(entry, "duration_days", where, low=1)
            group = self.identifier(entry, "group", where)
            prices = self.offer_prices(entry.get("prices"), where, plan_id, kind, markets)
            platforms = self.platforms(entry, where)
            valid_from = self.timestamp(entry.get("valid_from"), where, "valid_from")
            valid_until = self.timestamp(entry.get("valid_until"), where, "valid_until")
            if valid_from and valid_until and valid_until <= valid_from:
                self.problem(where, "'valid_until' must be after 'valid_from'")
            rules = self.rules(entry.get("eligibility", []), f"{where}.eligibility", plans, markets)
            experiment = None
            if "experiment" in entry:
                experiment = self.experiment(entry["experiment"], f"{where}.experiment")
            if offer_id and kind is not None and plan_id in plans:
                offers.append(
                    Offer(
                        id=offer_id,
                        plan_id=str(plan_id),
                        kind=kind,
                        duration_days=duration,
                        group=group,
                        prices=prices,
                        rules=rules,
                        platforms=platforms,
                        valid_from=valid_from,
                        valid_until=valid_until,
                        priority=self.integer(entry, "priority", where, default=0, low=-1000),
                        experiment=experiment,
                    )
                )
        return tuple(offers)

    def offer_prices(
        self,
        raw: Any,
        where: str,
        plan_id: str,
        kind: OfferKind | None,
        markets: Mapping[str, Market],
    ) -> dict[str, int]:
        """An offer's price in each market it is sold in: a market selling its plan; 0 for
        a free trial."""
        prices = self.prices(raw, f"{where}.prices")
        if not prices:
            self.problem(where, "'prices' must list at least one market")
        for country in prices:
            market = markets.get(country)
            if market is None:
                self.problem(f"{where}.prices", f"unknown market '{country}'")
            elif plan_id not in market.plan_prices:
                self.problem(f"{where}.prices", f"plan {plan_id!r} is not sold in {country}")
            elif kind is OfferKind.FREE_TRIAL and prices[country] != 0:
                self.problem(f"{where}.prices", f"a free trial costs 0 (in {country})")
        return prices

    def platforms(self, entry: dict[str, Any], where: str) -> frozenset[Platform]:
        """An offer's `platforms`: every platform unless listed."""
        if "platforms" not in entry:
            return frozenset(Platform)
        parsed = [
            self.enum_value(Platform, p, where, "platforms")
            for p in self.listed(entry["platforms"], where, "platforms")
        ]
        platforms = frozenset(p for p in parsed if p is not None)
        if not platforms:
            self.problem(where, "'platforms' must name at least one platform")
        return platforms

    def rules(
        self, raw: Any, where: str, plans: Mapping[str, Plan], markets: Mapping[str, Market]
    ) -> tuple[Rule, ...]:
        if not isinstance(raw, list):
            self.problem(where, "expected a list of rules")
            return ()
        scope = RuleScope(plan_ids=plans.keys(), markets=markets.keys())
        rules: list[Rule] = []
        for index, item in enumerate(raw):
            rwhere = f"{where}[{index}]"
            if isinstance(item, str):
                name, arg = item, None
            elif isinstance(item, dict) and len(item) == 1:
                name, arg = next(iter(item.items()))
            else:
                self.problem(rwhere, "a rule is a name or a one-key mapping {name: argument}")
                continue
            rule = self.rule(str(name), arg, rwhere, scope)
            if rule is not None:
                rules.append(rule)
        return tuple(rules)

    def rule(self, name: str, arg: Any, where: str, scope: RuleScope) -> Rule | None:
        rule_type = RULE_TYPES.get(name)
        if rule_type is None:
            self.problem(where, f"unknown rule '{name}' (known: {', '.join(RULE_TYPES)})")
            return None
        try:
            return rule_type.parse(arg, scope)
        except RuleArgumentError as exc:
            for message in exc.problems:
                self.problem(where, message)
            return None

    def experiment(self, raw: Any, where: str) -> Experiment | None:
        entry = self.mapping(raw, where)
        self.check_keys(entry, where, {"id", "arms"})
        experiment_id = self.identifier(entry, "id", where)
        arms: list[ExperimentArm] = []
        raw_arms = entry.get("arms")
        if not isinstance(raw_arms, list) or not raw_arms:
            self.problem(where, "'arms' must be a non-empty list")
            return None
        names: set[str] = set()
        for index, arm in enumerate(raw_arms):
            awhere = f"{where}.arms[{index}]"
            arm = self.mapping(arm, awhere)
            self.check_keys(arm, awhere, {"name", "weight", "shows_offer"})
            name = self.identifier(arm, "name", awhere)
            if name in names:
                self.problem(awhere, f"duplicate arm '{name}'")
            names.add(name)
            weight = self.integer(arm, "weight", awhere, low=1)
            shows = arm.get("shows_offer", True)
            if not isinstance(shows, bool):
                self.problem(awhere, f"'shows_offer' must be true or false, got {shows!r}")
            arms.append(ExperimentArm(name, weight, bool(shows)))
        return Experiment(experiment_id, tuple(arms))
