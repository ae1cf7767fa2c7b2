"""App Store Server Notifications v2, verified by Apple's app-store-server-library.

`SignedDataVerifier` checks the JWS: the x5c chain of exactly three certificates up to one
of the configured roots (ENTITLEMENTS_APPLE_ROOT_CERTIFICATES), OpenSSL's strict checks on,
Apple's marker extensions on the leaf (1.2.840.113635.100.6.11.1) and the intermediate
(1.2.840.113635.100.6.2.1), the ES256 signature, the bundle id, the app Apple id
(Production) and the environment. Online revocation checks (OCSP) are off: the verifier
then judges the chain's validity at the payload's signedDate, so a redelivery days later
still verifies, and a payload signed outside its chain's validity does not. The
environments LOCAL_TESTING and Xcode, which skip the signature, are never accepted.

The signed transaction and renewal info inside are verified the same way; the decoded
claims go to the domain mapping (service.domain.app_store_mapping).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from appstoreserverlibrary.models.Environment import Environment
from appstoreserverlibrary.signed_data_verifier import (
    SignedDataVerifier,
    VerificationException,
    VerificationStatus,
)
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from service.ingestion.errors import NotVerifiable, VerificationUnavailable

SOURCE = "app_store"
ENVIRONMENTS = {"Production": Environment.PRODUCTION, "Sandbox": Environment.SANDBOX}

_REFUSALS = {
    VerificationStatus.INVALID_APP_IDENTIFIER: (403, "wrong_app"),
    VerificationStatus.INVALID_ENVIRONMENT: (403, "wrong_environment"),
    VerificationStatus.INVALID_CHAIN_LENGTH: (401, "invalid_chain"),
    VerificationStatus.INVALID_CHAIN: (401, "invalid_chain"),
    VerificationStatus.INVALID_CERTIFICATE: (401, "invalid_certificate"),
    VerificationStatus.VERIFICATION_FAILURE: (401, "verification_failure"),
}


def load_root_certificates(files: str) -> list[bytes]:
    """The DER bytes of each certificate in the comma-separated files (DER or PEM)."""
    roots: list[bytes] = []
    for name in (part.strip() for part in files.split(",")):
        if not name:
            continue
        data = Path(name).read_bytes()
        if b"-----BEGIN CERTIFICATE-----" in data:
            roots.extend(
                certificate.public_bytes(Encoding.DER)
                for certificate in x509.load_pem_x509_certificates(data)
            )
        else:
            roots.append(x509.load_der_x509_certificate(data).public_bytes(Encoding.DER))
    return roots


def _claims(jws: str) -> dict[str, Any]:
    """The payload of a compact JWS the verifier has just verified."""
    payload = jws.split(".")[1]
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    if not isinstance(decoded, dict):
        raise ValueError("the JWS payload is not an object")
    return decoded


class AppStoreVerifier:
    def __init__(
        self,
        root_certificates: list[bytes],
        bundle_id: str,
        environment: str,
        app_apple_id: int | None = None,
        online_checks: bool = False,
    ) -> None:
        if environment not in ENVIRONMENTS:
            raise ValueError(f"App Store environment must be one of {sorted(ENVIRONMENTS)}")
        if not root_certificates:
            raise ValueError("App Store: no root certificates configured")
        if not bundle_id:
            raise ValueError("App Store: no bundle id configured")
        self._verifier = SignedDataVerifier(
            root_certificates, online_checks, ENVIRONMENTS[environment], bundle_id, app_apple_id
        )

    def verify_signed(
        self, signed_transaction: str, signed_renewal: str | None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """A signed transaction and renewal info from the App Store Server API, verified
        as those inside notifications are (chain, signature, bundle, environment); their
        claims. NotVerifiable or VerificationUnavailable otherwise."""
        try:
            self._verifier.verify_and_decode_signed_transaction(signed_transaction)
            transaction = _claims(signed_transaction)
            renewal = None
            if signed_renewal is not None:
                self._verifier.verify_and_decode_renewal_info(signed_renewal)
                renewal = _claims(signed_renewal)
        except VerificationException as error:
            if error.status is VerificationStatus.RETRYABLE_VERIFICATION_FAILURE:
                raise VerificationUnavailable(str(error)) from error
            status, reason = _REFUSALS.get(error.status, (401, "verification_failure"))
            raise NotVerifiable(status, reason, str(error)) from error
        except ValueError as error:
            raise NotVerifiable(400, "malformed", str(error)) from error
        return transaction, renewal

    def verify(self, body: bytes) -> tuple[str, dict[str, Any]]:
        """(notificationUUID, the decoded notification with "transaction" and
        "renewalInfo" decoded in it). NotVerifiable or VerificationUnavailable otherwise."""
        try:
            signed = json.loads(body)["signedPayload"]
            if not isinstance(signed, str):
                raise TypeError("signedPayload is not a string")
        except (ValueError, KeyError, TypeError) as error:
            detail = f"expected {{'signedPayload': JWS}}: {error}"
            raise NotVerifiable(400, "malformed", detail) from error
        try:
            self._verifier.verify_and_decode_notification(signed)
            notification = _claims(signed)
            data = notification.get("data")
            if isinstance(data, dict):
                if isinstance(data.get("signedTransactionInfo"), str):
                    transaction = data["signedTransactionInfo"]
                    self._verifier.verify_and_decode_signed_transaction(transaction)
                    notification["transaction"] = _claims(transaction)
                if isinstance(data.get("signedRenewalInfo"), str):
                    renewal = data["signedRenewalInfo"]
                    self._verifier.verify_and_decode_renewal_info(renewal)
                    notification["renewalInfo"] = _claims(renewal)
        except VerificationException as error:
            if error.status is VerificationStatus.RETRYABLE_VERIFICATION_FAILURE:
                raise VerificationUnavailable(str(error)) from error
            status, reason = _REFUSALS.get(error.status, (401, "verification_failure"))
            raise NotVerifiable(status, reason, str(error)) from error
        except ValueError as error:  # a payload the library verified but is not JSON
            raise NotVerifiable(400, "malformed", str(error)) from error
        uuid = notification.get("notificationUUID")
        if not isinstance(uuid, str) or not uuid:
            raise NotVerifiable(400, "malformed", "no notificationUUID")
        return uuid, notification
