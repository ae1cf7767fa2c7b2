"""gRPC servicers: thin adapters that parse, call a use case and convert the answer."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from entitlements.v1 import (
    entitlement_service_pb2,
    entitlement_service_pb2_grpc,
    offer_service_pb2,
    offer_service_pb2_grpc,
    subscription_event_service_pb2,
    subscription_event_service_pb2_grpc,
)
from service import convert
from service.errors import InvalidRequest
from service.reads import ReadService
from storage.repository import StoreUnavailable

log = logging.getLogger(__name__)

Handler = TypeVar("Handler", bound=Callable[..., Any])


def _abort_invalid(context: grpc.ServicerContext, error: InvalidRequest) -> NoReturn:
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ]
    )
    detail = any_pb2.Any()
    detail.Pack(bad_request)
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(error), details=[detail])
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("unreachable")  # abort_with_status raises


def handle_errors(handler: Handler) -> Handler:
    """Maps use-case errors to gRPC statuses; internals never reach the caller."""

    @functools.wraps(handler)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return handler(self, request, context)
        except InvalidRequest as error:
            _abort_invalid(context, error)
        except StoreUnavailable:
            log.warning("store unavailable in %s", handler.__name__, exc_info=True)
            context.abort(grpc.StatusCode.UNAVAILABLE, "the account store is unavailable")

    return wrapper  # type: ignore[return-value]


class EntitlementServicer(entitlement_service_pb2_grpc.EntitlementServiceServicer):
    def __init__(self, reads: ReadService) -> None:
        self._reads = reads

    @handle_errors
    def GetEntitlement(
        self,
        request: entitlement_service_pb2.GetEntitlementRequest,
        context: grpc.ServicerContext,
    ) -> entitlement_service_pb2.GetEntitlementResponse:
        decision = self._reads.get_entitlement(
            request.user_id,
            request.feature_id,
            convert.consistency_from_proto(request.consistency),
        )
        return entitlement_service_pb2.GetEntitlementResponse(
            entitlement=convert.entitlement_to_proto(decision),
            catalog_version=self._reads.catalog.version,
        )

    @handle_errors
    def ListEntitlements(
        self,
        request: entitlement_service_pb2.ListEntitlementsRequest,
        context: grpc.ServicerContext,
    ) -> entitlement_service_pb2.ListEntitlementsResponse:
        decisions = self._reads.list_entitlements(
            request.user_id, convert.consistency_from_proto(request.consistency)
        )
        return entitlement_service_pb2.ListEntitlementsResponse(
            entitlements=convert.entitlements_to_proto(decisions),
            catalog_version=self._reads.catalog.version,
        )

    @handle_errors
    def BatchGetEntitlements(
        self,
        request: entitlement_service_pb2.BatchGetEntitlementsRequest,
        context: grpc.ServicerContext,
    ) -> entitlement_service_pb2.BatchGetEntitlementsResponse:
        decisions = self._reads.batch_get_entitlements(
            [(q.user_id, q.feature_id) for q in request.queries],
            convert.consistency_from_proto(request.consistency),
        )
        return entitlement_service_pb2.BatchGetEntitlementsResponse(
            entitlements=convert.entitlements_to_proto(decisions),
            catalog_version=self._reads.catalog.version,
        )


class OfferServicer(offer_service_pb2_grpc.OfferServiceServicer):
    def __init__(self, reads: ReadService) -> None:
        self._reads = reads

    @handle_errors
    def GetOffers(
        self, request: offer_service_pb2.GetOffersRequest, context: grpc.ServicerContext
    ) -> offer_service_pb2.GetOffersResponse:
        decisions = self._reads.get_offers(
            request.user_id,
            request.market,
            convert.platform_from_proto(request.platform),
            convert.consistency_from_proto(request.consistency),
        )
        return convert.offers_to_proto(
            decisions, request.include_ineligible, self._reads.catalog.version
        )


class SubscriptionEventServicer(
    subscription_event_service_pb2_grpc.SubscriptionEventServiceServicer
):
    """The write side's contract is published; its implementation is a later milestone, so
    every RPC answers UNIMPLEMENTED (the generated base class's behaviour, kept explicit)."""

    def _unimplemented(self, context: grpc.ServicerContext, method: str) -> NoReturn:
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet (write path)"
        )
        raise AssertionError("unreachable")

    def RecordSubscriptionEvent(
        self,
        request: subscription_event_service_pb2.RecordSubscriptionEventRequest,
        context: grpc.ServicerContext,
    ) -> subscription_event_service_pb2.RecordSubscriptionEventResponse:
        self._unimplemented(context, "RecordSubscriptionEvent")

    def GrantEntitlement(
        self,
        request: subscription_event_service_pb2.GrantEntitlementRequest,
        context: grpc.ServicerContext,
    ) -> subscription_event_service_pb2.GrantEntitlementResponse:
        self._unimplemented(context, "GrantEntitlement")

    def RevokeEntitlement(
        self,
        request: subscription_event_service_pb2.RevokeEntitlementRequest,
        context: grpc.ServicerContext,
    ) -> subscription_event_service_pb2.RevokeEntitlementResponse:
        self._unimplemented(context, "RevokeEntitlement")

    def RedeemOffer(
        self,
        request: subscription_event_service_pb2.RedeemOfferRequest,
        context: grpc.ServicerContext,
    ) -> subscription_event_service_pb2.RedeemOfferResponse:
        self._unimplemented(context, "RedeemOffer")
