"""Reconciliation from the App Store Server API (`entitlements reconcile-app-store`): a
local stand-in of "Get All Subscription Statuses" (the real API is unreachable here) that
checks the client's ES256 bearer token and answers transactions signed with a generated
chain; the command verifies them with the notifications' strict verifier and records what
is missing, once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from storage.sqlite import SqliteRepository
from tests.store_signing import BUNDLE_ID, AppleChain, millis
from tests.support.cli import run_cli
from tests.support.stand_ins import json_get_stand_in

PLAN = "premium_individual"
DAY = timedelta(days=1)
KEY_ID, ISSUER_ID = "KEY1234567", "57246542-96fe-1a63-e053-0824d011072a"
PATH = "/inApps/v1/subscriptions/"


@dataclass
class StatusApi:
    """The stand-in: originalTransactionId -> (status, signed transaction, signed renewal)."""

    key: ec.EllipticCurvePrivateKey
    subscriptions: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    refused_tokens: int = 0
    url: str = ""

    def answer(self, path: str, authorization: str) -> tuple[int, dict[str, Any]]:
        try:
            claims = jwt.decode(
                authorization.removeprefix("Bearer "),
                self.key.public_key(),
                algorithms=["ES256"],
                audience="appstoreconnect-v1",
            )
            assert (claims["iss"], claims["bid"]) == (ISSUER_ID, BUNDLE_ID)
        except (jwt.PyJWTError, AssertionError, KeyError):
            self.refused_tokens += 1
            return 401, {"errorCode": 4010000, "errorMessage": "unauthorized"}
        original = path.removeprefix(PATH).split("?")[0]
        if not path.startswith(PATH) or original not in self.subscriptions:
            return 404, {"errorCode": 4040010, "errorMessage": "Transaction id not found."}
        status, transaction, renewal = self.subscriptions[original]
        item = {
            "status": status,
            "originalTransactionId": original,
            "signedTransactionInfo": transaction,
            "signedRenewalInfo": renewal,
        }
        group = {"subscriptionGroupIdentifier": "21000000", "lastTransactions": [item]}
        return 200, {"environment": "Sandbox", "bundleId": BUNDLE_ID, "data": [group]}


@pytest.fixture
def status_api() -> Iterator[StatusApi]:
    api = StatusApi(ec.generate_private_key(ec.SECP256R1()))
    with json_get_stand_in(api.answer) as url:
        api.url = url
        yield api


def signed_purchase(
    chain: AppleChain, original: str, owner: str | None, expires: datetime, auto_renew: int = 1
) -> tuple[str, str]:
    now = datetime.now(UTC)
    transaction: dict[str, Any] = {
        "transactionId": f"{original}-1",
        "originalTransactionId": original,
        "bundleId": BUNDLE_ID,
        "productId": PLAN,
        "purchaseDate": millis(now - DAY),
        "expiresDate": millis(expires),
        "type": "Auto-Renewable Subscription",
        "storefront": "USA",
        "environment": "Sandbox",
        "signedDate": millis(now),
    }
    if owner is not None:
        transaction["appAccountToken"] = owner
    renewal = {
        "originalTransactionId": original,
        "autoRenewProductId": PLAN,
        "productId": PLAN,
        "autoRenewStatus": auto_renew,
        "environment": "Sandbox",
        "signedDate": millis(now),
    }
    return chain.sign(transaction), chain.sign(renewal)


@pytest.mark.subprocess
def test_reconciliation_records_an_app_store_purchase_whose_notification_never_came(
    status_api: StatusApi, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    chain = AppleChain.around(now)
    db = tmp_path / "entitlements.db"
    SqliteRepository(db, create=True).close()
    key_file = tmp_path / "SubscriptionKey.p8"
    key_file.write_bytes(
        status_api.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    env = {
        "ENTITLEMENTS_APPLE_ROOT_CERTIFICATES": str(chain.write_root(tmp_path / "root.der")),
        "ENTITLEMENTS_APPLE_BUNDLE_ID": BUNDLE_ID,
        "ENTITLEMENTS_APPLE_ENVIRONMENT": "Sandbox",
        "ENTITLEMENTS_APPLE_API_KEY_FILE": str(key_file),
        "ENTITLEMENTS_APPLE_API_KEY_ID": KEY_ID,
        "ENTITLEMENTS_APPLE_API_ISSUER_ID": ISSUER_ID,
        "ENTITLEMENTS_APPLE_API_URL": status_api.url,
    }
    user, stranger = str(uuid.uuid4()), str(uuid.uuid4())
    mine, theirs, forged, unknown = (
        "2000000000000101",
        "2000000000000102",
        "2000000000000103",
        "2000000000000104",
    )
    status_api.subscriptions[mine] = (1, *signed_purchase(chain, mine, user, now + 30 * DAY))
    status_api.subscriptions[theirs] = (
        1,
        *signed_purchase(chain, theirs, stranger, now + 30 * DAY),
    )
    forger = AppleChain.around(now)  # not under the configured root
    status_api.subscriptions[forged] = (1, *signed_purchase(forger, forged, user, now + 30 * DAY))
    storage = ("--storage", f"sqlite:///{db}")
    first = run_cli(
        "reconcile-app-store", user, mine, theirs, forged, unknown, *storage,
        cwd=tmp_path, env=env, check=False,
    )  # fmt: skip
    lines = dict(line.split(": ", 1) for line in first.stdout.splitlines())
    assert lines[mine].startswith("recorded"), first.stdout + first.stderr
    assert lines[theirs].startswith("the purchase belongs to another user")
    assert lines[forged].startswith("refused: ")
    assert lines[unknown].startswith("not found")
    assert status_api.refused_tokens == 0
    repository = SqliteRepository(db)
    try:
        (subscription,) = repository.load(user).account.subscriptions
        assert subscription.subscription_id == f"app_store:{mine}"
        assert subscription.status.value == "active"
        assert subscription.plan_id == PLAN
        assert repository.load(stranger).account.subscriptions == ()
    finally:
        repository.close()
    # Nothing changed at Apple: reconciling again is a duplicate.
    again = run_cli("reconcile-app-store", user, mine, *storage, cwd=tmp_path, env=env)
    assert f"{mine}: duplicate" in again.stdout
    # Auto-renew turned off since: the new state is recorded.
    status_api.subscriptions[mine] = (
        1, *signed_purchase(chain, mine, user, now + 30 * DAY, auto_renew=0),
    )  # fmt: skip
    changed = run_cli("reconcile-app-store", user, mine, *storage, cwd=tmp_path, env=env)
    assert f"{mine}: recorded" in changed.stdout
    repository = SqliteRepository(db)
    try:
        (subscription,) = repository.load(user).account.subscriptions
        assert not subscription.auto_renew
    finally:
        repository.close()
