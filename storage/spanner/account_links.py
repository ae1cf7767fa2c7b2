"""Store accounts linked to users on Spanner: the StoreAccounts table of migration 0007
(storage.account_links has the contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.cloud.spanner_v1 import param_types

from storage.spanner.client import DatabasePath, database_handle, store_call


class SpannerAccountLinks:
    def __init__(self, url: str, default_timeout: float = 5.0, endpoint: str | None = None) -> None:
        self._path = DatabasePath.parse(url)
        self._timeout = default_timeout
        self._endpoint = endpoint  # an emulator's host:port (tests)

    def link(self, store: str, account_id: str, user_id: str, at: datetime) -> None:
        def write(transaction: Any) -> None:
            transaction.insert_or_update(
                "StoreAccounts",
                columns=("Store", "AccountId", "UserId", "LinkedAt"),
                values=[(store, account_id, user_id, at)],
            )

        with store_call(self._path, "account link", self._timeout):
            database_handle(self._path, self._endpoint).run_in_transaction(write)

    def user_for(self, store: str, account_id: str) -> str | None:
        with (
            store_call(self._path, "account link", self._timeout),
            database_handle(self._path, self._endpoint).snapshot() as snapshot,
        ):
            rows = list(
                snapshot.execute_sql(
                    "SELECT UserId FROM StoreAccounts WHERE Store = @store AND AccountId = @id",
                    params={"store": store, "id": account_id},
                    param_types={"store": param_types.STRING, "id": param_types.STRING},
                )
            )
        return str(rows[0][0]) if rows else None

    def close(self) -> None:
        pass
