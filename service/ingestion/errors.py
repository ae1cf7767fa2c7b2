"""What an adapter answers when a notification cannot be taken in."""

from __future__ import annotations


class NotVerifiable(Exception):
    """The notification will never verify (malformed, forged, another app or environment,
    a chain that does not lead to a configured root): 4xx, counted, never retried by us.
    `status` is the HTTP status to answer and `reason` a short label for the metrics."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason


class VerificationUnavailable(Exception):
    """Verification could not complete now (an online revocation check failed to reach its
    responder): 5xx, the store redelivers."""
