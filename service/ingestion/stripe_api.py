"""The Stripe API behind an interface (StripeApi), for what a webhook event may name only
by id: the invoice of a refunded or disputed charge (and the dispute's charge), which the
mapping needs to name the refunded period (service.domain.stripe_mapping). Through the
`stripe` library's StripeClient with a restricted key (read access to charges and
invoices: ENTITLEMENTS_STRIPE_API_KEY); `stripe_api_url` replaces Stripe's API address
(tests: a local stand-in). Without a key, such events stay dead letters (MISSING_DATA).

The event itself is verified (its signature) before anything is fetched; what is fetched
comes from Stripe over TLS with our key, so it is as trustworthy as the event."""

from __future__ import annotations

import copy
from typing import Any, Protocol

import stripe

API_TIMEOUT_SECONDS = 10

_REFUND_KINDS = ("charge.refunded", "charge.dispute.created", "charge.dispute.closed")


class StripeApiUnavailable(Exception):
    """The Stripe API did not answer usably now: the notification is answered 503."""


class StripeApi(Protocol):
    def charge(self, charge_id: str) -> dict[str, Any]:
        """The charge, its invoice expanded."""

    def invoice(self, invoice_id: str) -> dict[str, Any]: ...


class LibraryStripeApi:
    def __init__(self, api_key: str, api_url: str = "") -> None:
        http_client = stripe.RequestsClient(timeout=API_TIMEOUT_SECONDS)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_url.rstrip("/")} if api_url else None,
            max_network_retries=1,
            http_client=http_client,
        )

    def charge(self, charge_id: str) -> dict[str, Any]:
        return self._call(
            lambda: self._client.v1.charges.retrieve(charge_id, params={"expand": ["invoice"]})
        )

    def invoice(self, invoice_id: str) -> dict[str, Any]:
        return self._call(lambda: self._client.v1.invoices.retrieve(invoice_id))

    @staticmethod
    def _call(fetch: Any) -> dict[str, Any]:
        try:
            found = fetch()
        except stripe.InvalidRequestError:
            raise  # not found, or no such field: the caller keeps the event as it is
        except stripe.StripeError as error:
            raise StripeApiUnavailable(str(error)) from error
        result: dict[str, Any] = found.to_dict()
        return result


def expand_refund(event: dict[str, Any], api: StripeApi) -> dict[str, Any]:
    """The event with the refunded charge and its invoice expanded where the event names
    them only by id (a copy; the event itself when nothing is missing or it is no refund
    or dispute). StripeApiUnavailable on a transient failure; a charge or invoice Stripe
    does not know is left as it was (the mapping keeps a dead letter)."""
    if event.get("type") not in _REFUND_KINDS:
        return event
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        return event
    dispute = event["type"] != "charge.refunded"
    charge = obj.get("charge") if dispute else obj
    if isinstance(charge, dict) and not isinstance(charge.get("invoice"), str):
        return event  # nothing missing (or no invoice at all: not a subscription's)
    expanded = copy.deepcopy(event)
    target = expanded["data"]["object"]
    try:
        if isinstance(charge, str):
            target["charge"] = api.charge(charge)
        elif isinstance(charge, dict):
            invoice = api.invoice(charge["invoice"])
            if dispute:
                target["charge"]["invoice"] = invoice
            else:
                target["invoice"] = invoice
    except stripe.InvalidRequestError:
        return event
    return expanded
