"""Signing store notifications in tests, as the stores do, so that verification stays on.

App Store: a generated chain of three certificates (root, intermediate with Apple's marker
extension 1.2.840.113635.100.6.2.1, leaf with 1.2.840.113635.100.6.11.1), each with
subject and authority key identifiers and key usage, so that the library's chain check
passes with OpenSSL's strict mode on (Apple's own test certificates lack them, and their
tests turn strict mode off: not here). Payloads are ES256 JWS with the chain in x5c,
signed by the leaf's key; never the library's LOCAL_TESTING shortcut.

Stripe: the library's own WebhookSignature.generate_signature_header."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import stripe
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

LEAF_OID = x509.ObjectIdentifier("1.2.840.113635.100.6.11.1")
INTERMEDIATE_OID = x509.ObjectIdentifier("1.2.840.113635.100.6.2.1")
BUNDLE_ID = "com.example.music"
APP_APPLE_ID = 1234567890


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Apple"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    marker: x509.ObjectIdentifier | None,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    issuer_name = issuer[0].subject if issuer else _name(subject)
    signing_key = issuer[1] if issuer else key
    issuer_public = signing_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False
        )
    )
    if marker is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(marker, b"\x05\x00"), False)
    return builder.sign(signing_key, hashes.SHA256())


@dataclass
class AppleChain:
    """A root, an intermediate and a leaf, valid from `not_before` to `not_after` (the
    leaf's own validity may be narrower: `leaf_not_after`)."""

    not_before: datetime
    not_after: datetime
    leaf_not_after: datetime | None = None
    leaf_marker: bool = True
    root_key: ec.EllipticCurvePrivateKey = field(init=False)
    leaf_key: ec.EllipticCurvePrivateKey = field(init=False)
    root: x509.Certificate = field(init=False)
    intermediate: x509.Certificate = field(init=False)
    leaf: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        intermediate_key = ec.generate_private_key(ec.SECP256R1())
        self.leaf_key = ec.generate_private_key(ec.SECP256R1())
        span = {"not_before": self.not_before, "not_after": self.not_after}
        self.root = _certificate(
            "Test Apple Root CA", self.root_key, None, ca=True, marker=None, **span
        )
        self.intermediate = _certificate(
            "Test Apple WWDR CA",
            intermediate_key,
            (self.root, self.root_key),
            ca=True,
            marker=INTERMEDIATE_OID,
            **span,
        )
        self.leaf = _certificate(
            "Test Apple Store Signing",
            self.leaf_key,
            (self.intermediate, intermediate_key),
            ca=False,
            marker=LEAF_OID if self.leaf_marker else None,
            not_before=self.not_before,
            not_after=self.leaf_not_after or self.not_after,
        )

    @classmethod
    def around(cls, now: datetime, **kwargs: Any) -> AppleChain:
        return cls(now - timedelta(days=400), now + timedelta(days=365), **kwargs)

    def write_root(self, path: Path, pem: bool = False) -> Path:
        path.write_bytes(self.root.public_bytes(Encoding.PEM if pem else Encoding.DER))
        return path

    def sign(self, claims: dict[str, Any]) -> str:
        x5c = [
            base64.b64encode(c.public_bytes(Encoding.DER)).decode()
            for c in (self.leaf, self.intermediate, self.root)
        ]
        return jwt.encode(claims, self.leaf_key, algorithm="ES256", headers={"x5c": x5c})


def millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def app_store_notification(
    chain: AppleChain,
    kind: str,
    subtype: str | None,
    *,
    user: str,
    original_transaction_id: str,
    product: str,
    signed_at: datetime,
    expires: datetime,
    notification_uuid: str | None = None,
    bundle_id: str = BUNDLE_ID,
    environment: str = "Sandbox",
    grace_expires: datetime | None = None,
    storefront: str = "USA",
    extra_transaction: Mapping[str, Any] | None = None,
) -> tuple[str, bytes]:
    """(notificationUUID, the request body {"signedPayload": ...}) of a v2 notification
    with its signed transaction and renewal info."""
    transaction = {
        "transactionId": f"{original_transaction_id}-{millis(signed_at)}",
        "originalTransactionId": original_transaction_id,
        "bundleId": bundle_id,
        "productId": product,
        "purchaseDate": millis(signed_at),
        "expiresDate": millis(expires),
        "type": "Auto-Renewable Subscription",
        "appAccountToken": user,
        "storefront": storefront,
        "environment": environment,
        "signedDate": millis(signed_at),
        **(extra_transaction or {}),
    }
    renewal: dict[str, Any] = {
        "originalTransactionId": original_transaction_id,
        "autoRenewProductId": product,
        "productId": product,
        "autoRenewStatus": 1,
        "environment": environment,
        "signedDate": millis(signed_at),
    }
    if grace_expires is not None:
        renewal["gracePeriodExpiresDate"] = millis(grace_expires)
    notification_uuid = notification_uuid or str(uuid.uuid4())
    claims: dict[str, Any] = {
        "notificationType": kind,
        "notificationUUID": notification_uuid,
        "version": "2.0",
        "signedDate": millis(signed_at),
        "data": {
            "bundleId": bundle_id,
            "appAppleId": APP_APPLE_ID,
            "environment": environment,
            "signedTransactionInfo": chain.sign(transaction),
            "signedRenewalInfo": chain.sign(renewal),
            "status": 1,
        },
    }
    if subtype is not None:
        claims["subtype"] = subtype
    return notification_uuid, json.dumps({"signedPayload": chain.sign(claims)}).encode()


def app_store_test_notification(
    chain: AppleChain, signed_at: datetime, environment: str = "Sandbox"
) -> bytes:
    claims = {
        "notificationType": "TEST",
        "notificationUUID": str(uuid.uuid4()),
        "version": "2.0",
        "signedDate": millis(signed_at),
        "data": {"bundleId": BUNDLE_ID, "appAppleId": APP_APPLE_ID, "environment": environment},
    }
    return json.dumps({"signedPayload": chain.sign(claims)}).encode()


STRIPE_SECRET = "whsec_test_0123456789abcdef"


def stripe_signed(event: dict[str, Any], secret: str = STRIPE_SECRET) -> tuple[bytes, str]:
    """(body, Stripe-Signature header) as Stripe sends them."""
    body = json.dumps(event)
    return body.encode(), stripe.WebhookSignature.generate_signature_header(body, secret)


def stripe_subscription_event(
    event_id: str,
    kind: str,
    *,
    created: datetime,
    subscription_id: str,
    user: str | None,
    price_lookup_key: str,
    status: str,
    period_end: datetime,
    cancel_at_period_end: bool = False,
    previous: dict[str, Any] | None = None,
    period_end_on_item: bool = True,
) -> dict[str, Any]:
    """A customer.subscription.* event; the period end on the item as API versions from
    2025-03-31 put it (or on the subscription, as before)."""
    item: dict[str, Any] = {
        "id": f"si_{subscription_id}",
        "object": "subscription_item",
        "price": {"id": f"price_{price_lookup_key}", "lookup_key": price_lookup_key},
    }
    subscription: dict[str, Any] = {
        "id": subscription_id,
        "object": "subscription",
        "customer": "cus_test",
        "status": status,
        "cancel_at_period_end": cancel_at_period_end,
        "cancel_at": None,
        "metadata": {"user_id": user} if user else {},
        "items": {"object": "list", "data": [item]},
    }
    if period_end_on_item:
        item["current_period_end"] = int(period_end.timestamp())
    else:
        subscription["current_period_end"] = int(period_end.timestamp())
    data: dict[str, Any] = {"object": subscription}
    if previous is not None:
        data["previous_attributes"] = previous
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": int(created.timestamp()),
        "type": kind,
        "livemode": False,
        "data": data,
    }
