"""What a verified store notification becomes: an event for a user, nothing, or a dead
letter with its reason (docs/INGESTION.md).

The store adapters (service/ingestion) verify a notification with the store's own library
and hand its decoded JSON to the pure mapping of that store (app_store_mapping,
stripe_mapping, play_mapping), which answers one of:

- Mapped: record this event for this user (RecordSubscriptionEvent's use case);
- Ignored: the notification announces nothing to record (a TEST notification, a change
  that a later notification reports when it takes effect);
- Unmappable: it should change someone's access but cannot be mapped (unknown product, no
  user, a type we do not handle, data missing): kept as a dead letter with the reason,
  listed and replayed after a fix, never dropped.

Store product ids name our plans: a plan's App Store product id, Play product id and
Stripe price (lookup_key or id) are the plan id itself.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping as MappingType
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from service.domain.catalog import Catalog
from service.domain.events import SubscriptionEvent


class DeadLetterReason(enum.StrEnum):
    UNKNOWN_PRODUCT = "unknown_product"
    NO_USER = "no_user"
    UNHANDLED_TYPE = "unhandled_type"
    # A field the mapping needs is missing from the notification.
    MISSING_DATA = "missing_data"
    # Mapped, but the event was refused as invalid (RecordSubscriptionEvent's checks).
    INVALID_EVENT = "invalid_event"


@dataclass(frozen=True, slots=True)
class Mapped:
    user_id: str
    event: SubscriptionEvent
    # Events of the same user recorded after `event` (Play: the expiry of the purchase a
    # linkedPurchaseToken replaced).
    then: tuple[SubscriptionEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class Ignored:
    why: str


@dataclass(frozen=True, slots=True)
class Unmappable:
    reason: DeadLetterReason
    detail: str


Mapping = Mapped | Ignored | Unmappable


class Mapper(Protocol):
    """A store's mapping: the notification's own user first, else `linked_user` (the user
    the notification's store account is linked to, looked up by the use case)."""

    def __call__(
        self,
        notification: MappingType[str, Any],
        catalog: Catalog,
        linked_user: str | None = None,
        /,
    ) -> Mapping: ...


def plan_for_product(catalog: Catalog, *product_ids: str | None) -> str | None:
    """The premium plan a store product names (the first of `product_ids` that is one)."""
    for product_id in product_ids:
        if product_id is None:
            continue
        plan = catalog.plans.get(product_id)
        if plan is not None and plan.premium:
            return plan.id
    return None


def from_millis(value: object) -> datetime | None:
    """A store's epoch milliseconds (App Store, Play) as an aware datetime."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None


def from_seconds(value: object) -> datetime | None:
    """Stripe's epoch seconds as an aware datetime."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (ValueError, OverflowError, OSError):
        return None


def from_rfc3339(value: object) -> datetime | None:
    """Play's RFC 3339 timestamps ("2026-01-01T00:00:00.123Z")."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# App Store storefronts are ISO 3166-1 alpha-3, our markets alpha-2. The storefronts of
# the markets a catalog is likely to sell in; another storefront records no market (the
# event's market is optional).
STOREFRONT_MARKETS: dict[str, str] = {
    "USA": "US", "GBR": "GB", "SWE": "SE", "DEU": "DE", "FRA": "FR", "JPN": "JP",
    "BRA": "BR", "IND": "IN", "MEX": "MX", "AUS": "AU", "CAN": "CA", "ESP": "ES",
    "ITA": "IT", "NLD": "NL", "NOR": "NO", "DNK": "DK", "FIN": "FI", "POL": "PL",
    "AUT": "AT", "BEL": "BE", "CHE": "CH", "IRL": "IE", "PRT": "PT", "NZL": "NZ",
    "KOR": "KR", "SGP": "SG", "ARG": "AR", "CHL": "CL", "COL": "CO", "ZAF": "ZA",
    "TUR": "TR", "IDN": "ID", "PHL": "PH", "THA": "TH", "TWN": "TW", "HKG": "HK",
    "ISR": "IL", "ARE": "AE", "SAU": "SA", "EGY": "EG", "CZE": "CZ", "HUN": "HU",
    "ROU": "RO", "GRC": "GR", "UKR": "UA", "VNM": "VN", "MYS": "MY", "PER": "PE",
}  # fmt: skip


def market_for_storefront(storefront: object) -> str | None:
    return STOREFRONT_MARKETS.get(storefront) if isinstance(storefront, str) else None
