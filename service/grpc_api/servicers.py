"""gRPC servicers: thin adapters that parse, call a use case and convert the answer.

They run on the event loop; the RPC guard (service.grpc_api.guard) around each method
authenticates, sets the deadline budget and maps errors."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from entitlements.v1 import (
    entitlement_service_pb2,
    entitlement_service_pb2_grpc,
    offer_service_pb2,
    offer_service_pb2_grpc,
    subscription_event_service_pb2,
    subscription_event_service_pb2_grpc,
)
from service.grpc_api import convert
from service.usecases.change_streams import ChangeStreams
from service.usecases.reads import ReadService
from service.usecases.watch import WatchService
from service.usecases.writes import WriteService


class EntitlementServicer(entitlement_service_pb2_grpc.EntitlementServiceServicer):
    def __init__(self, reads: ReadService, watches: WatchService, changes: ChangeStreams) -> None:
        self._reads = reads
        self._watches = watches
        self._changes = changes

    async def GetEntitlement(
        self,
        request: entitlement_service_pb2.GetEntitlementRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> entitlement_service_pb2.GetEntitlementResponse:
        answer = await self._reads.get_entitlement(
            request.user_id,
            request.feature_id,
            convert.consistency_from_proto(request.consistency),
        )
        return entitlement_service_pb2.GetEntitlementResponse(
            entitlement=convert.entitlement_to_proto(answer.value),
            catalog_version=self._reads.catalog.version,
            stale=answer.stale,
        )

    async def ListEntitlements(
        self,
        request: entitlement_service_pb2.ListEntitlementsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> entitlement_service_pb2.ListEntitlementsResponse:
        answer = await self._reads.list_entitlements(
            request.user_id, convert.consistency_from_proto(request.consistency)
        )
        return entitlement_service_pb2.ListEntitlementsResponse(
            entitlements=convert.entitlements_to_proto(answer.value),
            catalog_version=self._reads.catalog.version,
            stale=answer.stale,
        )

    async def BatchGetEntitlements(
        self,
        request: entitlement_service_pb2.BatchGetEntitlementsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> entitlement_service_pb2.BatchGetEntitlementsResponse:
        answer = await self._reads.batch_get_entitlements(
            [(q.user_id, q.feature_id) for q in request.queries],
            convert.consistency_from_proto(request.consistency),
        )
        return entitlement_service_pb2.BatchGetEntitlementsResponse(
            entitlements=convert.entitlements_to_proto(answer.value),
            catalog_version=self._reads.catalog.version,
            stale=answer.stale,
        )

    async def WatchEntitlements(
        self,
        request: entitlement_service_pb2.WatchEntitlementsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[entitlement_service_pb2.WatchEntitlementsResponse]:
        version = self._reads.catalog.version
        updates = self._watches.watch(
            request.user_id, list(request.feature_ids), request.resume_token
        )
        # Closed at once when the client goes away (the call is cancelled), not when the
        # generator is collected: the watch's slot is given back then.
        async with contextlib.aclosing(updates):
            async for update in updates:
                yield convert.watch_update_to_proto(update, version)

    async def WatchChanges(
        self,
        request: entitlement_service_pb2.WatchChangesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[entitlement_service_pb2.WatchChangesResponse]:
        messages = self._changes.stream(request.position)
        async with contextlib.aclosing(messages):  # the stream's slot back at once
            async for message in messages:
                yield convert.change_message_to_proto(message)


class OfferServicer(offer_service_pb2_grpc.OfferServiceServicer):
    def __init__(self, reads: ReadService) -> None:
        self._reads = reads

    async def GetOffers(
        self,
        request: offer_service_pb2.GetOffersRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> offer_service_pb2.GetOffersResponse:
        answer = await self._reads.get_offers(
            request.user_id,
            request.market,
            convert.platform_from_proto(request.platform),
            convert.consistency_from_proto(request.consistency),
        )
        response = convert.offers_to_proto(
            answer.value, request.include_ineligible, self._reads.catalog.version
        )
        response.stale = answer.stale
        return response


class SubscriptionEventServicer(
    subscription_event_service_pb2_grpc.SubscriptionEventServiceServicer
):
    def __init__(self, writes: WriteService) -> None:
        self._writes = writes

    async def RecordSubscriptionEvent(
        self,
        request: subscription_event_service_pb2.RecordSubscriptionEventRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subscription_event_service_pb2.RecordSubscriptionEventResponse:
        answer = await self._writes.record_event(request.user_id, convert.event_from_proto(request))
        return convert.event_answer_to_proto(answer)

    async def GrantEntitlement(
        self,
        request: subscription_event_service_pb2.GrantEntitlementRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subscription_event_service_pb2.GrantEntitlementResponse:
        answer = await self._writes.grant(
            request.request_id,
            request.user_id,
            convert.grant_request_from_proto(request),
        )
        return subscription_event_service_pb2.GrantEntitlementResponse(
            grant=convert.grant_to_proto(answer.grant),
            consistency_token=answer.consistency_token,
        )

    async def RevokeEntitlement(
        self,
        request: subscription_event_service_pb2.RevokeEntitlementRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subscription_event_service_pb2.RevokeEntitlementResponse:
        answer = await self._writes.revoke(request.request_id, request.user_id, request.grant_id)
        return subscription_event_service_pb2.RevokeEntitlementResponse(
            grant=convert.grant_to_proto(answer.grant),
            consistency_token=answer.consistency_token,
        )

    async def RedeemOffer(
        self,
        request: subscription_event_service_pb2.RedeemOfferRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subscription_event_service_pb2.RedeemOfferResponse:
        answer = await self._writes.redeem(
            request.request_id,
            request.user_id,
            request.offer_id,
            request.market,
            convert.platform_from_proto(request.platform),
            convert.store_from_proto(request.store),
            request.subscription_id,
        )
        return subscription_event_service_pb2.RedeemOfferResponse(
            subscription=convert.subscription_to_proto(answer.subscription),
            consistency_token=answer.consistency_token,
        )

    async def CreateHousehold(
        self,
        request: subscription_event_service_pb2.CreateHouseholdRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subscription_event_service_pb2.CreateHouseholdResponse:
        answer = await self._writes.create_household(request.request_id, request.manager_user_id)
        return subscription_event_service_pb2.CreateHouseholdResponse(
            household_id=answer.household_id,
            plan_id=answer.plan_id,
            household_size=answer.household_size,
            consistency_token=answer.consistency_token,
        )

    async def AddHouseholdMember(
        self,
        request: subscription_event_service_pb2.AddHouseholdMemberRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subscription_event_service_pb2.AddHouseholdMemberResponse:
        answer = await self._writes.add_household_member(
            request.request_id,
            request.manager_user_id,
            request.household_id,
            request.member_user_id,
        )
        return subscription_event_service_pb2.AddHouseholdMemberResponse(
            household_id=answer.household_id,
            consistency_token=answer.consistency_token,
            manager_consistency_token=answer.manager_consistency_token,
        )

    async def RemoveHouseholdMember(
        self,
        request: subscription_event_service_pb2.RemoveHouseholdMemberRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subscription_event_service_pb2.RemoveHouseholdMemberResponse:
        answer = await self._writes.remove_household_member(
            request.request_id,
            request.manager_user_id,
            request.household_id,
            request.member_user_id,
        )
        return subscription_event_service_pb2.RemoveHouseholdMemberResponse(
            household_id=answer.household_id,
            consistency_token=answer.consistency_token,
            manager_consistency_token=answer.manager_consistency_token,
        )

    async def RecordStudentVerification(
        self,
        request: subscription_event_service_pb2.RecordStudentVerificationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subscription_event_service_pb2.RecordStudentVerificationResponse:
        answer = await self._writes.record_student_verification(
            request.request_id,
            request.user_id,
            convert.optional_time(request, "verified_until"),
            request.provider_reference,
        )
        response = subscription_event_service_pb2.RecordStudentVerificationResponse(
            consistency_token=answer.consistency_token
        )
        if answer.verified_until is not None:
            response.verified_until.CopyFrom(convert.timestamp(answer.verified_until))
        return response

    async def RevokeStudentVerification(
        self,
        request: subscription_event_service_pb2.RevokeStudentVerificationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subscription_event_service_pb2.RevokeStudentVerificationResponse:
        answer = await self._writes.revoke_student_verification(request.request_id, request.user_id)
        return subscription_event_service_pb2.RevokeStudentVerificationResponse(
            consistency_token=answer.consistency_token
        )
