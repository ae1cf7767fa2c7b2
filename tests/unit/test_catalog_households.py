"""The catalog's household join cooldown and student plans (issue 12): parsed, defaulted
and validated with the path of the bad entry."""

from __future__ import annotations

from typing import Any

import pytest

from service.catalog import parse_catalog
from tests.support.catalog import assert_problem, problems_of, raw_copy


def plan_index(doc: dict[str, Any], plan_id: str) -> int:
    return next(i for i, plan in enumerate(doc["plans"]) if plan["id"] == plan_id)


def test_the_join_cooldown_defaults_to_none() -> None:
    doc = raw_copy()
    assert parse_catalog(doc).household_join_cooldown_days == 30
    del doc["household_join_cooldown_days"]
    assert parse_catalog(doc).household_join_cooldown_days == 0


@pytest.mark.parametrize("days", [-1, "30", 2.5, True, None])
def test_a_bad_join_cooldown(days: Any) -> None:
    doc = raw_copy()
    doc["household_join_cooldown_days"] = days
    assert_problem(problems_of(doc), "household_join_cooldown_days", "integer >= 0")


def test_student_plans() -> None:
    catalog = parse_catalog(raw_copy())
    assert [p.id for p in catalog.plans.values() if p.requires_verified_student] == [
        "premium_student"
    ]
    doc = raw_copy()
    i = plan_index(doc, "premium_student")
    doc["plans"][i]["requires_verified_student"] = "yes"
    assert_problem(problems_of(doc), f"plans[{i}] (premium_student)", "true or false")
    # A household shares the manager's plan; a verification is one person's.
    doc = raw_copy()
    i = plan_index(doc, "premium_family")
    doc["plans"][i]["requires_verified_student"] = True
    assert_problem(problems_of(doc), f"plans[{i}] (premium_family)", "not a household plan")
