"""Store accounts linked to our users (docs/INGESTION.md): a Stripe customer, an App Store
originalTransactionId. Notifications that do not name the user themselves are mapped
through these links; `entitlements link-store-account` writes them (the app's backend, or
support, once it knows whose the account is).

Backends: storage/memory/account_links.py, storage/sqlite/account_links.py (the
`store_accounts` table of migration 0007) and storage/spanner/account_links.py (the
`StoreAccounts` table), chosen by storage.urls.open_account_links. This module holds their
contract."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class AccountLinks(Protocol):
    def link(self, store: str, account_id: str, user_id: str, at: datetime) -> None:
        """Links the account to the user (a later link replaces an earlier one)."""

    def user_for(self, store: str, account_id: str) -> str | None: ...

    def close(self) -> None: ...
