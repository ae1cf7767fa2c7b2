"""Decision evaluation (pure domain functions) for realistic users."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.data import SITUATIONS
from benchmarks.micro.conftest import NOW
from service.domain.account import UserState
from service.domain.catalog import Catalog
from service.domain.decisions import decide_all_entitlements, decide_entitlement, decide_offers
from service.domain.rules import Platform


@pytest.mark.parametrize("situation", SITUATIONS)
def test_decide_entitlement(
    benchmark: Any, catalog: Catalog, situation_states: dict[str, UserState], situation: str
) -> None:
    """One feature (ad-free playback) for a user in each demo situation."""
    user = situation_states[situation]
    decision = benchmark(decide_entitlement, catalog, user, "ad_free_playback", NOW)
    assert decision.feature.id == "ad_free_playback"


def test_decide_all_entitlements_family_manager(
    benchmark: Any, catalog: Catalog, situation_states: dict[str, UserState]
) -> None:
    """Every feature of the catalog for a Family plan manager (quota and roles)."""
    decisions = benchmark(decide_all_entitlements, catalog, situation_states["family-manager"], NOW)
    assert len(decisions) == len(catalog.features)


@pytest.mark.parametrize(
    ("situation", "market", "platform"),
    [
        ("free", "US", Platform.WEB),
        ("lapsed", "US", Platform.IOS),
        ("student", "US", Platform.ANDROID),
        ("active", "GB", Platform.WEB),
    ],
)
def test_decide_offers(
    benchmark: Any,
    catalog: Catalog,
    situation_states: dict[str, UserState],
    situation: str,
    market: str,
    platform: Platform,
) -> None:
    decisions = benchmark(
        decide_offers, catalog, situation_states[situation], market, platform, NOW
    )
    assert len(decisions.eligible) + len(decisions.ineligible) == len(catalog.offers)
