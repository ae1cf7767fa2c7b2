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
        answer = await self._writes.events.record(convert.record_event_command(request))
        return convert.event_answer_to_proto(answer)

    async def GrantEntitlement(
        self,
        request: subscription_event_service_pb2.GrantEntitlementRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subscription_event_service_pb2.GrantEntitlementResponse:
        answer = await self._writes.grants.grant(convert.grant_command(request))
        return convert.grant_answer_to_proto(answer)

    async def RevokeEntitlement(
        self,
        request: subscription_event_service_pb2.RevokeEntitlementRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subscription_event_service_pb2.RevokeEntitlementResponse:
        answer = await self._writes.grants.revoke(convert.revoke_command(request))
        return convert.revoke_answer_to_proto(answer)

    async def RedeemOffer(
        self,
        request: subscription_event_service_pb2.RedeemOfferRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subscription_event_service_pb2.RedeemOfferResponse:
        answer = await self._writes.redemptions.redeem(convert.redeem_command(request))
        return convert.redeem_answer_to_proto(answer)

    async def CreateHousehold(
        self,
        request: subscription_event_service_pb2.CreateHouseholdRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subscription_event_service_pb2.CreateHouseholdResponse:
        answer = await self._writes.households.create(convert.create_household_command(request))
        return convert.household_answer_to_proto(answer)

    async def AddHouseholdMember(
        self,
        request: subscription_event_service_pb2.AddHouseholdMemberRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subscription_event_service_pb2.AddHouseholdMemberResponse:
        answer = await self._writes.households.add_member(convert.add_member_command(request))
        return convert.add_member_answer_to_proto(answer)

    async def RemoveHouseholdMember(
        self,
        request: subscription_event_service_pb2.RemoveHouseholdMemberRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subscription_event_service_pb2.RemoveHouseholdMemberResponse:
        answer = await self._writes.households.remove_member(convert.remove_member_command(request))
        return convert.remove_member_answer_to_proto(answer)

    async def RecordStudentVerification(
        self,
        request: subscription_event_service_pb2.RecordStudentVerificationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subscription_event_service_pb2.RecordStudentVerificationResponse:
        answer = await self._writes.students.record(convert.student_verification_command(request))
        return convert.student_answer_to_proto(answer)

    async def RevokeStudentVerification(
        self,
        request: subscription_event_service_pb2.RevokeStudentVerificationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subscription_event_service_pb2.RevokeStudentVerificationResponse:
        answer = await self._writes.students.revoke(convert.revoke_student_command(request))
        return convert.revoke_student_answer_to_proto(answer)
