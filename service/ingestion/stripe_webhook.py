"""Stripe webhooks, verified by the `stripe` library: `Webhook.construct_event` checks the
`Stripe-Signature` header (HMAC-SHA256, scheme v1) with the endpoint's signing secret
(ENTITLEMENTS_STRIPE_WEBHOOK_SECRET) and refuses a timestamp older than the tolerance (a
replayed old delivery). The verified body goes to service.domain.stripe_mapping."""

from __future__ import annotations

import json
from typing import Any

import stripe

from service.ingestion.errors import NotVerifiable

SOURCE = "stripe"
# Stripe's own default: a signature older than this is refused.
TOLERANCE_SECONDS = 300


class StripeVerifier:
    def __init__(self, secret: str, tolerance_seconds: int = TOLERANCE_SECONDS) -> None:
        if not secret:
            raise ValueError("Stripe: no webhook secret configured")
        self._secret = secret
        self._tolerance = tolerance_seconds

    def verify(self, body: bytes, signature: str | None) -> tuple[str, dict[str, Any]]:
        """(event id, the event as JSON). NotVerifiable otherwise."""
        if not signature:
            raise NotVerifiable(401, "unsigned", "no Stripe-Signature header")
        try:
            payload = body.decode("utf-8")
            stripe.Webhook.construct_event(payload, signature, self._secret, self._tolerance)
            event = json.loads(payload)
        except stripe.SignatureVerificationError as error:
            raise NotVerifiable(401, "verification_failure", str(error)) from error
        except ValueError as error:  # not UTF-8 or not JSON
            raise NotVerifiable(400, "malformed", str(error)) from error
        event_id = event.get("id") if isinstance(event, dict) else None
        if not isinstance(event_id, str) or not event_id:
            raise NotVerifiable(400, "malformed", "the event has no id")
        return event_id, event
