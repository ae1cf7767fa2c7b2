"""The example catalog, the catalog version, and validation with the path of each problem."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.catalog import CatalogError, load_catalog, parse_catalog
from service.domain import rules
from service.domain.account import HouseholdRole
from service.domain.catalog import FeatureKind, OfferKind
from service.domain.rules import (
    RULE_TYPES,
    CurrentPlanIn,
    GroupNotRedeemed,
    LapsedForDays,
    MarketIn,
    NeverHadPremium,
    NotInHouseholdCooldown,
    Platform,
    PlatformIn,
    Rule,
    VerifiedStudent,
)
from tests.support.catalog import (
    EXAMPLE_RAW,
    EXAMPLE_TEXT,
    Doc,
    assert_problem,
    problems_of,
    raw_copy,
)

FIRST_FEATURE: str = EXAMPLE_RAW["features"][0]["id"]


def offer_index(doc: Doc, offer_id: str) -> int:
    for index, offer in enumerate(doc["offers"]):
        if offer["id"] == offer_id:
            return index
    raise KeyError(offer_id)


def offer_where(doc: Doc, offer_id: str) -> str:
    return f"offers[{offer_index(doc, offer_id)}] ({offer_id})"


TRIAL = "premium-individual-trial-1m"
HOLIDAY = "premium-individual-holiday-2026"
DUO_INTRO = "premium-duo-intro-3m"
WINBACK = "premium-individual-winback-3m"


# --- the example catalog -------------------------------------------------------------


def test_example_catalog_loads_with_plans_and_features() -> None:
    catalog = load_catalog()
    assert catalog.version.startswith("sha256:")
    assert set(catalog.plans) == {
        "free",
        "basic",
        "premium_individual",
        "premium_duo",
        "premium_family",
        "premium_student",
    }
    assert catalog.free_plan_id == "free"
    assert not catalog.plans["free"].premium
    assert catalog.premium_plan_ids == set(catalog.plans) - {"free"}
    assert catalog.plans["premium_duo"].household_size == 2
    assert catalog.plans["premium_family"].household_size == 6
    assert catalog.plans["premium_individual"].household_size == 1
    audiobooks = catalog.features["audiobook_hours"]
    assert audiobooks.kind is FeatureKind.QUOTA
    assert audiobooks.unit
    family_hours = catalog.plans["premium_family"].features["audiobook_hours"]
    assert family_hours.value == 15
    assert family_hours.roles == {HouseholdRole.MANAGER}
    downloads = catalog.plans["premium_family"].features["offline_downloads"]
    assert downloads.roles == set(HouseholdRole)
    # The YAML anchor gives the student plan the individual plan's features.
    assert dict(catalog.plans["premium_student"].features) == dict(
        catalog.plans["premium_individual"].features
    )


def test_example_catalog_markets() -> None:
    catalog = load_catalog()
    assert len(catalog.markets) >= 8
    currencies = {market.currency for market in catalog.markets.values()}
    assert len(currencies) >= 8
    assert catalog.markets["US"].currency == "USD"
    assert catalog.markets["SE"].currency == "SEK"
    assert catalog.markets["JP"].currency == "JPY"
    for market in catalog.markets.values():
        assert set(market.plan_prices) <= set(catalog.plans)
        assert market.plan_prices["free"] == 0
    assert "basic" not in catalog.markets["JP"].plan_prices


def test_example_catalog_offers_of_every_kind() -> None:
    catalog = load_catalog()
    offers = {offer.id: offer for offer in catalog.offers}
    assert len(offers) == len(catalog.offers)
    trials = [o for o in catalog.offers if o.group == "trial"]
    assert len(trials) >= 2
    for trial in trials:
        assert trial.kind is OfferKind.FREE_TRIAL
        assert set(trial.prices.values()) == {0}
        assert NeverHadPremium() in trial.rules
        assert GroupNotRedeemed() in trial.rules
    assert {o.kind for o in catalog.offers} == set(OfferKind)
    assert offers[DUO_INTRO].kind is OfferKind.INTRO_PRICE
    winback = offers[WINBACK]
    assert winback.kind is OfferKind.WINBACK
    assert LapsedForDays(30) in winback.rules
    student = next(o for o in catalog.offers if o.kind is OfferKind.STUDENT)
    assert VerifiedStudent() in student.rules
    with_experiment = [o for o in catalog.offers if o.experiment is not None]
    assert [o.id for o in with_experiment] == [DUO_INTRO]
    experiment = with_experiment[0].experiment
    assert experiment is not None
    assert [arm.name for arm in experiment.arms] == ["control", "intro-price"]
    holiday = offers[HOLIDAY]
    assert holiday.valid_from is not None
    assert holiday.valid_until is not None
    assert holiday.valid_from.utcoffset() is not None
    assert holiday.valid_from.isoformat() == "2026-11-20T00:00:00+00:00"
    assert holiday.valid_until.isoformat() == "2027-01-06T00:00:00+00:00"
    for offer in catalog.offers:
        assert offer.plan_id in catalog.premium_plan_ids
        for country in offer.prices:
            assert offer.plan_id in catalog.markets[country].plan_prices


# --- the catalog version ---------------------------------------------------------------


def test_version_is_stable_for_the_same_content() -> None:
    assert load_catalog().version == load_catalog().version
    assert parse_catalog(raw_copy()).version == load_catalog().version


def test_version_changes_when_content_changes() -> None:
    base = load_catalog().version
    doc = raw_copy()
    doc["markets"][0]["prices"]["premium_individual"] += 1
    assert parse_catalog(doc).version != base
    doc = raw_copy()
    doc["offers"][offer_index(doc, TRIAL)]["priority"] = 101
    assert parse_catalog(doc).version != base
    doc = raw_copy()
    doc["features"][0]["description"] = "Changed."
    assert parse_catalog(doc).version != base


def test_version_ignores_formatting_and_comments(tmp_path: Path) -> None:
    base = load_catalog().version
    # Same document, block style, keys sorted, no anchors, every comment gone and new ones.
    reformatted = "# A different header comment.\n" + yaml.safe_dump(
        EXAMPLE_RAW, default_flow_style=False, sort_keys=True, indent=4
    ).replace("\nplans:\n", "\n# plans follow\nplans:   # trailing comment\n")
    path = tmp_path / "reformatted.yaml"
    path.write_text(reformatted, encoding="utf-8")
    assert load_catalog(path).version == base
    # Flow style everywhere.
    flow = tmp_path / "flow.yaml"
    flow.write_text(yaml.safe_dump(EXAMPLE_RAW, default_flow_style=True), encoding="utf-8")
    assert load_catalog(flow).version == base
    # Comments only.
    commented = tmp_path / "commented.yaml"
    lines = [
        line + "  # note" if line.startswith("  - id:") else line
        for line in EXAMPLE_TEXT.splitlines()
    ]
    assert lines != EXAMPLE_TEXT.splitlines()
    commented.write_text("\n".join(["# extra", *lines, "# trailing"]), encoding="utf-8")
    assert load_catalog(commented).version == base


# --- validation ------------------------------------------------------------------------


def test_unknown_plan_in_offer() -> None:
    doc = raw_copy()
    doc["offers"][0]["plan"] = "premium"
    assert_problem(problems_of(doc), f"offers[0] ({TRIAL})", "unknown plan 'premium'")


def test_offer_for_a_free_plan() -> None:
    doc = raw_copy()
    doc["offers"][0]["plan"] = "free"
    assert_problem(problems_of(doc), f"offers[0] ({TRIAL})", "plan 'free' is not premium")


def test_unknown_feature_in_plan() -> None:
    doc = raw_copy()
    doc["plans"][0]["features"]["teleportation"] = {}
    assert_problem(
        problems_of(doc),
        "plans[0] (free).features.teleportation",
        "unknown feature 'teleportation'",
    )


@pytest.mark.parametrize("country", ["usa", "us", "U1", 12, None])
def test_bad_country_code(country: Any) -> None:
    doc = raw_copy()
    doc["markets"][0]["country"] = country
    problems = problems_of(doc)
    where = f"markets[0] ({country})" if isinstance(country, str) else "markets[0]"
    assert_problem(problems, where, "'country' must be ISO 3166-1 alpha-2")


@pytest.mark.parametrize("currency", ["pounds", "gbp", "GB", 826, None])
def test_bad_currency(currency: Any) -> None:
    doc = raw_copy()
    doc["markets"][1]["currency"] = currency
    assert_problem(problems_of(doc), "markets[1] (GB)", "'currency' must be ISO 4217")


@pytest.mark.parametrize(
    ("section", "index", "where", "message"),
    [
        ("features", 1, f"features[2] ({FIRST_FEATURE})", "duplicate feature id"),
        ("plans", 1, "plans[2] (free)", "duplicate plan id 'free'"),
        ("markets", 1, "markets[2] (US)", "duplicate market 'US'"),
        ("offers", 1, f"offers[2] ({TRIAL})", f"duplicate offer id '{TRIAL}'"),
    ],
)
def test_duplicate_ids(section: str, index: int, where: str, message: str) -> None:
    doc = raw_copy()
    # Insert a copy of the first entry at position 2.
    doc[section].insert(index + 1, copy.deepcopy(doc[section][0]))
    assert_problem(problems_of(doc), where, message)


def test_duplicate_experiment_arm() -> None:
    doc = raw_copy()
    i = offer_index(doc, DUO_INTRO)
    arms = doc["offers"][i]["experiment"]["arms"]
    arms.append(dict(arms[0]))
    assert_problem(
        problems_of(doc), f"offers[{i}] ({DUO_INTRO}).experiment.arms[2]", "duplicate arm 'control'"
    )


def test_unknown_rule_name() -> None:
    doc = raw_copy()
    doc["offers"][0]["eligibility"].append("is_cool")
    assert_problem(
        problems_of(doc), f"offers[0] ({TRIAL}).eligibility[2]", "unknown rule 'is_cool'"
    )


def test_unknown_rule_lists_the_known_rules() -> None:
    doc = raw_copy()
    doc["offers"][0]["eligibility"] = ["is_cool"]
    assert problems_of(doc) == [
        f"offers[0] ({TRIAL}).eligibility[0]: unknown rule 'is_cool' (known: "
        "never_had_premium, group_not_redeemed, lapsed_for_days, current_plan_in, "
        "market_in, platform_in, verified_student, not_in_household_cooldown)"
    ]


def test_every_rule_is_registered_under_its_name() -> None:
    defined = {
        value
        for value in vars(rules).values()
        if isinstance(value, type)
        and value.__module__ == rules.__name__
        and value is not Rule
        and callable(getattr(value, "evaluate", None))
    }
    assert set(RULE_TYPES.values()) == defined
    assert all(rule.name == name for name, rule in RULE_TYPES.items())


@pytest.mark.parametrize(
    ("entry", "rule"),
    [
        ("never_had_premium", NeverHadPremium()),
        ({"never_had_premium": None}, NeverHadPremium()),
        ({"group_not_redeemed": True}, GroupNotRedeemed()),
        ({"verified_student": {}}, VerifiedStudent()),
        ({"lapsed_for_days": 30}, LapsedForDays(30)),
        ({"not_in_household_cooldown": 14}, NotInHouseholdCooldown(14)),
        ({"current_plan_in": ["free", "basic"]}, CurrentPlanIn(frozenset({"free", "basic"}))),
        ({"market_in": ["US", "SE"]}, MarketIn(frozenset({"US", "SE"}))),
        ({"platform_in": ["web", "ios"]}, PlatformIn(frozenset({Platform.WEB, Platform.IOS}))),
    ],
)
def test_rules_parse_their_arguments(entry: Any, rule: Rule) -> None:
    doc = raw_copy()
    i = offer_index(doc, WINBACK)
    doc["offers"][i]["eligibility"] = [entry]
    assert parse_catalog(doc).offers[i].rules == (rule,)


def test_every_bad_entry_of_a_rule_argument_is_reported_in_order() -> None:
    doc = raw_copy()
    i = offer_index(doc, WINBACK)
    doc["offers"][i]["eligibility"] = [{"market_in": ["XX", "usa", "SE", 7]}]
    where = f"offers[{i}] ({WINBACK}).eligibility[0]"
    assert problems_of(doc) == [
        f"{where}: unknown market 'XX'",
        f"{where}: not an ISO 3166-1 alpha-2 code: 'usa'",
        f"{where}: not an ISO 3166-1 alpha-2 code: 7",
    ]


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ({"lapsed_for_days": 0}, "'lapsed_for_days' takes a number of days >= 1"),
        ({"lapsed_for_days": "thirty"}, "'lapsed_for_days' takes a number of days >= 1"),
        ({"lapsed_for_days": True}, "'lapsed_for_days' takes a number of days >= 1"),
        ("lapsed_for_days", "'lapsed_for_days' takes a number of days >= 1"),
        ({"not_in_household_cooldown": -3}, "takes a number of days >= 1"),
        ({"current_plan_in": []}, "'current_plan_in' takes a non-empty list"),
        ({"current_plan_in": ["premium"]}, "unknown plan 'premium'"),
        ({"market_in": ["usa"]}, "not an ISO 3166-1 alpha-2 code: 'usa'"),
        ({"market_in": "US"}, "'market_in' takes a non-empty list"),
        ({"platform_in": ["playstation"]}, "'platform_in' must be one of"),
        ({"never_had_premium": 5}, "'never_had_premium' takes no argument"),
        ({"lapsed_for_days": 30, "market_in": ["US"]}, "a rule is a name or a one-key mapping"),
        (42, "a rule is a name or a one-key mapping"),
        ({42: None}, "unknown rule '42'"),
    ],
)
def test_bad_rule_argument(rule: Any, fragment: str) -> None:
    doc = raw_copy()
    i = offer_index(doc, WINBACK)
    doc["offers"][i]["eligibility"] = [rule]
    assert_problem(problems_of(doc), f"offers[{i}] ({WINBACK}).eligibility[0]", fragment)


def test_eligibility_must_be_a_list() -> None:
    doc = raw_copy()
    doc["offers"][0]["eligibility"] = "never_had_premium"
    assert_problem(problems_of(doc), f"offers[0] ({TRIAL}).eligibility", "expected a list")


def test_free_trial_with_a_price() -> None:
    doc = raw_copy()
    doc["offers"][0]["prices"]["SE"] = 100
    assert_problem(problems_of(doc), f"offers[0] ({TRIAL}).prices", "a free trial costs 0 (in SE)")


def test_offer_priced_in_a_market_that_does_not_sell_the_plan() -> None:
    doc = raw_copy()
    doc["markets"][2]["prices"].pop("premium_duo")  # SE stops selling Duo
    assert_problem(
        problems_of(doc),
        f"{offer_where(doc, DUO_INTRO)}.prices",
        "plan 'premium_duo' is not sold in SE",
    )


def test_offer_priced_in_an_unknown_market() -> None:
    doc = raw_copy()
    doc["offers"][0]["prices"]["ZZ"] = 0
    assert_problem(problems_of(doc), f"offers[0] ({TRIAL}).prices", "unknown market 'ZZ'")


def test_offer_without_prices() -> None:
    doc = raw_copy()
    doc["offers"][0]["prices"] = {}
    assert_problem(problems_of(doc), f"offers[0] ({TRIAL})", "'prices' must list at least one")


@pytest.mark.parametrize("amount", [-1, 9.99, "999", True])
def test_bad_price(amount: Any) -> None:
    doc = raw_copy()
    doc["markets"][0]["prices"]["basic"] = amount
    assert_problem(
        problems_of(doc), "markets[0] (US).prices", "price of 'basic' must be a whole number"
    )


def test_market_price_for_an_unknown_plan() -> None:
    doc = raw_copy()
    doc["markets"][0]["prices"]["platinum"] = 2999
    assert_problem(problems_of(doc), "markets[0] (US).prices", "unknown plan 'platinum'")


@pytest.mark.parametrize("settings_", [{}, {"value": 0}, {"value": "15"}, None])
def test_quota_feature_without_value(settings_: Any) -> None:
    doc = raw_copy()
    doc["plans"][5]["features"]["audiobook_hours"] = settings_
    assert_problem(
        problems_of(doc),
        "plans[5] (premium_family).features.audiobook_hours",
        "'value' must be an integer >= 1",
    )


def test_boolean_feature_with_value() -> None:
    doc = raw_copy()
    doc["plans"][1]["features"]["offline_downloads"] = {"value": 3}
    assert_problem(
        problems_of(doc), "plans[1] (basic).features.offline_downloads", "takes no 'value'"
    )


def test_quota_feature_without_unit() -> None:
    doc = raw_copy()
    index = next(i for i, f in enumerate(doc["features"]) if f["id"] == "audiobook_hours")
    del doc["features"][index]["unit"]
    assert_problem(
        problems_of(doc), f"features[{index}] (audiobook_hours)", "a quota feature needs a 'unit'"
    )


def test_bad_household_role() -> None:
    doc = raw_copy()
    doc["plans"][5]["features"]["audiobook_hours"]["roles"] = ["owner"]
    problems = problems_of(doc)
    where = "plans[5] (premium_family).features.audiobook_hours"
    assert_problem(problems, where, "'roles' must be one of")
    assert_problem(problems, where, "'roles' must name at least one role")


@pytest.mark.parametrize("value", ["2026-11-20T00:00:00", datetime(2026, 11, 20), "2026-11-20"])
def test_naive_timestamp(value: Any) -> None:
    doc = raw_copy()
    doc["offers"][offer_index(doc, HOLIDAY)]["valid_from"] = value
    assert_problem(
        problems_of(doc), offer_where(doc, HOLIDAY), "'valid_from' must carry a time zone"
    )


def test_unparseable_timestamp() -> None:
    doc = raw_copy()
    doc["offers"][offer_index(doc, HOLIDAY)]["valid_until"] = "next christmas"
    assert_problem(
        problems_of(doc), offer_where(doc, HOLIDAY), "'valid_until' must be an ISO 8601 timestamp"
    )


@pytest.mark.parametrize("until", ["2026-11-19T00:00:00Z", "2026-11-20T00:00:00Z"])
def test_valid_until_not_after_valid_from(until: str) -> None:
    doc = raw_copy()
    doc["offers"][offer_index(doc, HOLIDAY)]["valid_until"] = until
    assert_problem(
        problems_of(doc), offer_where(doc, HOLIDAY), "'valid_until' must be after 'valid_from'"
    )


def test_timestamps_in_other_time_zones_are_accepted_as_utc() -> None:
    doc = raw_copy()
    i = offer_index(doc, HOLIDAY)
    doc["offers"][i]["valid_from"] = "2026-11-20T01:00:00+01:00"
    offer = parse_catalog(doc).offers[i]
    assert offer.valid_from is not None
    assert offer.valid_from.isoformat() == "2026-11-20T00:00:00+00:00"


@pytest.mark.parametrize(
    ("mutate", "where", "key"),
    [
        (lambda d: d.update(extra=1), "catalog", "extra"),
        (lambda d: d["features"][0].update(colour="red"), f"features[0] ({FIRST_FEATURE})",
         "colour"),
        (lambda d: d["plans"][1].update(price=1), "plans[1] (basic)", "price"),
        (lambda d: d["plans"][1]["features"]["offline_downloads"].update(limit=3),
         "plans[1] (basic).features.offline_downloads", "limit"),
        (lambda d: d["markets"][0].update(tax=0), "markets[0] (US)", "tax"),
        (lambda d: d["offers"][0].update(prise=0), f"offers[0] ({TRIAL})", "prise"),
        (lambda d: d["offers"][2]["experiment"].update(seed=1),
         f"offers[2] ({DUO_INTRO}).experiment", "seed"),
        (lambda d: d["offers"][2]["experiment"]["arms"][0].update(colour="x"),
         f"offers[2] ({DUO_INTRO}).experiment.arms[0]", "colour"),
    ],
)  # fmt: skip
def test_unknown_keys(mutate: Callable[[Doc], None], where: str, key: str) -> None:
    doc = raw_copy()
    mutate(doc)
    assert_problem(problems_of(doc), where, f"unknown key '{key}'")


def test_unknown_keys_of_mixed_types() -> None:
    doc = raw_copy()
    doc["offers"][0].update({1: "a", "zz": "b", None: "c"})
    problems = problems_of(doc)
    for key in ("1", "zz", "None"):
        assert_problem(problems, f"offers[0] ({TRIAL})", f"unknown key '{key}'")


@pytest.mark.parametrize("platforms", ["web", 5, {"web": 1}])
def test_platforms_must_be_a_list(platforms: Any) -> None:
    doc = raw_copy()
    doc["offers"][0]["platforms"] = platforms
    assert_problem(problems_of(doc), f"offers[0] ({TRIAL})", "'platforms' must be a list")


@pytest.mark.parametrize("roles", ["manager", True])
def test_roles_must_be_a_list(roles: Any) -> None:
    doc = raw_copy()
    doc["plans"][5]["features"]["audiobook_hours"]["roles"] = roles
    assert_problem(
        problems_of(doc),
        "plans[5] (premium_family).features.audiobook_hours",
        "'roles' must be a list",
    )


@pytest.mark.parametrize("free_plan", [["free"], {"id": "free"}, None])
def test_free_plan_must_name_a_plan(free_plan: Any) -> None:
    doc = raw_copy()
    doc["free_plan"] = free_plan
    assert_problem(problems_of(doc), "free_plan", "must name a plan of the catalog")


@pytest.mark.parametrize("plan", [["premium_individual"], {"a": 1}, None])
def test_offer_plan_must_be_a_plan_id(plan: Any) -> None:
    doc = raw_copy()
    doc["offers"][0]["plan"] = plan
    assert_problem(problems_of(doc), f"offers[0] ({TRIAL})", "unknown plan")


def test_current_plan_in_with_a_non_string_entry() -> None:
    doc = raw_copy()
    i = offer_index(doc, WINBACK)
    doc["offers"][i]["eligibility"] = [{"current_plan_in": [["free"]]}]
    assert_problem(
        problems_of(doc), f"offers[{i}] ({WINBACK}).eligibility[0]", "unknown plan ['free']"
    )


def test_bad_identifiers_and_enums() -> None:
    doc = raw_copy()
    doc["offers"][0]["id"] = "Premium Trial!"
    doc["offers"][1]["kind"] = "gift"
    doc["offers"][2]["platforms"] = ["web", "fridge"]
    doc["features"][0]["kind"] = "number"
    problems = problems_of(doc)
    assert_problem(problems, "offers[0] (Premium Trial!)", "'id' must be a lower-case identifier")
    assert_problem(problems, "offers[1] (premium-family-trial-1m)", "'kind' must be one of")
    assert_problem(problems, f"offers[2] ({DUO_INTRO})", "'platforms' must be one of", "fridge")
    assert_problem(problems, f"features[0] ({FIRST_FEATURE})", "'kind' must be one of")


def test_document_level_problems() -> None:
    assert_problem(problems_of([1, 2]), "catalog", "expected a mapping, got list")
    assert_problem(problems_of(None), "catalog", "expected a mapping")
    doc = raw_copy()
    doc["schema_version"] = 2
    doc["free_plan"] = "basic"
    doc["offers"] = {"a": 1}
    problems = problems_of(doc)
    assert_problem(problems, "schema_version", "must be 1, got 2")
    assert_problem(problems, "free_plan", "plan 'basic' is premium")
    assert_problem(problems, "offers", "expected a list")
    doc = raw_copy()
    doc["free_plan"] = "gratis"
    assert_problem(problems_of(doc), "free_plan", "must name a plan of the catalog")
    empty = {"schema_version": 1, "free_plan": "free"}
    problems = problems_of(empty)
    assert_problem(problems, "features", "at least one feature")
    assert_problem(problems, "plans", "at least one plan")
    assert_problem(problems, "markets", "at least one market")


def test_several_problems_are_reported_at_once() -> None:
    doc = raw_copy()
    doc["offers"][0]["plan"] = "premium"
    doc["plans"][0]["features"]["teleportation"] = {}
    doc["markets"][1]["currency"] = "pounds"
    doc["offers"][offer_index(doc, WINBACK)]["eligibility"] = [{"lapsed_for_days": 0}]
    doc["offers"][offer_index(doc, HOLIDAY)]["valid_from"] = "2026-11-20T00:00:00"
    doc["offers"][1]["prices"]["US"] = 5
    problems = problems_of(doc)
    assert_problem(problems, f"offers[0] ({TRIAL})", "unknown plan 'premium'")
    assert_problem(problems, "plans[0] (free).features.teleportation", "unknown feature")
    assert_problem(problems, "markets[1] (GB)", "'currency' must be ISO 4217")
    assert_problem(problems, f"{offer_where(doc, WINBACK)}.eligibility[0]", "lapsed_for_days")
    assert_problem(problems, offer_where(doc, HOLIDAY), "must carry a time zone")
    assert_problem(
        problems, "offers[1] (premium-family-trial-1m).prices", "a free trial costs 0 (in US)"
    )
    assert len(problems) >= 6


def test_load_catalog_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert len(info.value.problems) == 1
    assert str(path) in info.value.problems[0]


def test_load_catalog_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("features: [\n  - id: x\n plans: {", encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert str(path) in info.value.problems[0]
    assert "not valid YAML" in info.value.problems[0]


def test_load_catalog_of_an_invalid_document(tmp_path: Path) -> None:
    doc = raw_copy()
    doc["offers"][0]["plan"] = "premium"
    path = tmp_path / "invalid.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert_problem(info.value.problems, f"offers[0] ({TRIAL})", "unknown plan 'premium'")


# --- robustness: any mangled document is rejected with CatalogError, never a crash -----

_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from(["", "x", "US", "free", "trial", "web", "2026-01-01T00:00:00Z"]),
    st.lists(st.sampled_from(["free", "web", "US", 1]), max_size=2),
    # String keys only: a free-text field holding a mapping with keys of mixed types breaks
    # the version hash (json sort_keys), which is left alone.
    st.dictionaries(st.sampled_from(["id", "value", "x", "1"]), st.integers(0, 2), max_size=2),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(_paths(value, (*prefix, index)))
    return out


_ALL_PATHS = [p for p in _paths(EXAMPLE_RAW) if p]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.sampled_from(_ALL_PATHS), _JUNK), min_size=1, max_size=3),
)
def test_mangled_documents_raise_catalog_error_only(
    edits: list[tuple[tuple[Any, ...], Any]],
) -> None:
    doc = raw_copy()
    for path, junk in edits:
        node: Any = doc
        for step in path[:-1]:
            try:
                node = node[step]
            except (KeyError, IndexError, TypeError):
                break
        else:
            with contextlib.suppress(IndexError, TypeError):
                node[path[-1]] = junk
    try:
        parse_catalog(doc)
    except CatalogError as exc:
        problems = exc.problems
    else:
        return
    assert problems


def test_schema_version_must_be_the_integer_1() -> None:
    doc = raw_copy()
    doc["schema_version"] = True
    assert_problem(problems_of(doc), "schema_version", "must be 1")


def test_empty_platform_list_is_rejected() -> None:
    doc = raw_copy()
    doc["offers"][0]["platforms"] = []
    assert_problem(problems_of(doc), offer_where(doc, doc["offers"][0]["id"]), "at least one")


def test_market_in_names_a_catalog_market() -> None:
    doc = raw_copy()
    doc["offers"][0]["eligibility"].append({"market_in": ["XX"]})
    assert any("unknown market 'XX'" in p for p in problems_of(doc))


def test_text_fields_must_be_text() -> None:
    doc = raw_copy()
    doc["features"][0]["description"] = {1: 2, "a": 3}
    doc["plans"][0]["name"] = ["Free"]
    problems = problems_of(doc)
    assert any("'description' must be text" in p for p in problems)
    assert any("'name' must be text" in p for p in problems)
