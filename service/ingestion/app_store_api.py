"""The App Store Server API behind an interface (AppStoreServerApi), for reconciliation
(service/ingestion/reconcile.py): "Get All Subscription Statuses"
(GET /inApps/v1/subscriptions/{transactionId}) through Apple's app-store-server-library
client, authenticated with an In-App Purchase key (a .p8 file, its key id and the issuer
id, from App Store Connect). The answer's transactions and renewal infos are signed: the
caller verifies them with the same SignedDataVerifier as notifications
(AppStoreVerifier.verify_signed), so a stand-in or a proxy cannot invent a purchase.

`apple_api_url` replaces the library's base URL for the environment (tests: a local
stand-in of the endpoint; the real API is unreachable from the test machines)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import requests
from appstoreserverlibrary.api_client import APIException, AppStoreServerAPIClient

from service.ingestion.app_store import ENVIRONMENTS


class AppStoreApiUnavailable(Exception):
    """The App Store Server API did not answer usably now (retry later)."""


class AppStorePurchaseNotFound(Exception):
    """The App Store Server API knows no such transaction (in this environment)."""


@dataclass(frozen=True)
class SubscriptionStatus:
    """One subscription's latest state in a "Get All Subscription Statuses" answer: its
    status (1 active, 2 expired, 3 billing retry, 4 grace period, 5 revoked) and the
    signed transaction and renewal info, not yet verified."""

    original_transaction_id: str
    status: int
    signed_transaction: str
    signed_renewal: str | None


class AppStoreServerApi(Protocol):
    def subscription_statuses(self, transaction_id: str) -> list[SubscriptionStatus]:
        """Get All Subscription Statuses of the customer owning `transaction_id`.
        AppStorePurchaseNotFound or AppStoreApiUnavailable otherwise."""


class LibraryAppStoreServerApi:
    """Apple's AppStoreServerAPIClient, pointed at `base_url` when one is given."""

    def __init__(
        self,
        key_file: str,
        key_id: str,
        issuer_id: str,
        bundle_id: str,
        environment: str,
        base_url: str = "",
    ) -> None:
        if not (key_file and key_id and issuer_id and bundle_id):
            raise ValueError(
                "the App Store Server API needs apple_api_key_file, apple_api_key_id, "
                "apple_api_issuer_id and apple_bundle_id"
            )
        self._client = AppStoreServerAPIClient(
            Path(key_file).read_bytes(), key_id, issuer_id, bundle_id, ENVIRONMENTS[environment]
        )
        if base_url:
            # The one library internal used: its base URL, otherwise fixed by environment.
            self._client._base_url = base_url.rstrip("/")

    def subscription_statuses(self, transaction_id: str) -> list[SubscriptionStatus]:
        try:
            response = self._client.get_all_subscription_statuses(transaction_id)
        except APIException as error:
            if error.http_status_code in (400, 404):
                raise AppStorePurchaseNotFound(
                    f"{transaction_id}: HTTP {error.http_status_code} "
                    f"{error.error_message or ''}".strip()
                ) from error
            raise AppStoreApiUnavailable(
                f"Get All Subscription Statuses: HTTP {error.http_status_code}"
            ) from error
        except (requests.RequestException, ValueError) as error:
            raise AppStoreApiUnavailable(f"Get All Subscription Statuses: {error}") from error
        return [
            SubscriptionStatus(
                item.originalTransactionId,
                int(item.rawStatus),
                item.signedTransactionInfo,
                item.signedRenewalInfo,
            )
            for group in response.data or []
            for item in group.lastTransactions or []
            if item.originalTransactionId and item.signedTransactionInfo and item.rawStatus
        ]
