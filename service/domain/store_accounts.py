"""The store account each store's notification is about, to find a linked user when the
notification does not name one (storage/account_links.py, docs/INGESTION.md): the Stripe
customer, the App Store originalTransactionId. Google Play notifications always name the
user (obfuscatedExternalAccountId), so Play has none."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping as MappingType
from typing import Any

from service.domain.app_store_mapping import app_store_account
from service.domain.stripe_mapping import stripe_account

ACCOUNT_OF: dict[str, Callable[[MappingType[str, Any]], str | None]] = {
    "app_store": app_store_account,
    "stripe": stripe_account,
}
LINKABLE_STORES = tuple(ACCOUNT_OF)


def store_account(source: str, notification: MappingType[str, Any]) -> str | None:
    account_of = ACCOUNT_OF.get(source)
    return account_of(notification) if account_of is not None else None
