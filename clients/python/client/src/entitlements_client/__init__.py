"""The Python client of the entitlement and offer service (entitlements.v1)."""

from entitlements_client.client import (
    EntitlementsClient,
    EntitlementsError,
    Throttled,
    channel_options,
    service_config_json,
)
from entitlements_client.models import Entitlement, Entitlements, Offers
from entitlements_client.near_cache import NearCache, NearCacheStats
from entitlements_client.throttle import AdaptiveThrottle

__all__ = [
    "AdaptiveThrottle",
    "Entitlement",
    "Entitlements",
    "EntitlementsClient",
    "EntitlementsError",
    "NearCache",
    "NearCacheStats",
    "Offers",
    "Throttled",
    "channel_options",
    "service_config_json",
]
