"""EntitlementsClient: typed calls to the entitlement and offer service.

    with EntitlementsClient("entitlements:50051", credential=token, tls=True,
                            near_cache=True) as client:
        if client.get_entitlement(user_id, "offline_downloads").granted:
            ...

Every call has a deadline (`read_timeout`, `write_timeout`, or the call's own `timeout`),
is retried by gRPC as the service team's service config says (UNAVAILABLE and
RESOURCE_EXHAUSTED, 3 attempts with backoff, retry throttling), and passes the client's
adaptive throttle (entitlements_client.throttle), which refuses calls locally (Throttled)
while the server rejects many. The bearer credential goes with every call.

With `near_cache=True` decisions are kept in this process (entitlements_client.near_cache)
and kept exact by the server's change stream (WatchChanges), followed on a daemon thread:
a hit costs a few microseconds and no RPC. Writes through the client drop what it cached
of the written user and make its next reads carry the write's consistency token
(read-your-writes); a token passed to a read is never answered from older state.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from importlib.resources import files
from typing import Any, TypeVar

import grpc

from entitlements.v1 import (
    common_pb2,
    entitlement_service_pb2,
    entitlement_service_pb2_grpc,
    offer_service_pb2,
    offer_service_pb2_grpc,
    subscription_event_service_pb2,
    subscription_event_service_pb2_grpc,
)
from entitlements_client.models import Entitlement, Entitlements, Offers, valid_until_epoch
from entitlements_client.near_cache import NearCache
from entitlements_client.stream import ChangeFollower
from entitlements_client.throttle import AdaptiveThrottle

events_pb2 = subscription_event_service_pb2
Request = TypeVar("Request")
Response = TypeVar("Response")

# Codes by which a server refuses work it could not take (for the adaptive throttle, these
# are not "accepted").
_REJECTED = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE})
_ENTITLEMENT, _LIST, _OFFERS = "e", "l", "o"


class EntitlementsError(Exception):
    """A call failed: `code` is the gRPC status code, `details` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class Throttled(EntitlementsError):
    """Refused by the client itself: the server has been rejecting calls (adaptive
    throttling); back off. Its code is RESOURCE_EXHAUSTED."""

    def __init__(self) -> None:
        super().__init__(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "refused locally: the server rejects many calls (adaptive throttling)",
        )


def service_config_json() -> str:
    """The service team's gRPC service config (retries, default deadlines)."""
    return files("entitlements_client").joinpath("service_config.json").read_text("utf-8")


def channel_options() -> list[tuple[str, str | int]]:
    compact = json.dumps(json.loads(service_config_json()))
    return [("grpc.service_config", compact), ("grpc.enable_retries", 1)]


def _platform(platform: str | int) -> int:
    if isinstance(platform, int):
        return platform
    name = platform.upper()
    return int(
        common_pb2.Platform.Value(name if name.startswith("PLATFORM_") else f"PLATFORM_{name}")
    )


class EntitlementsClient:
    def __init__(
        self,
        target: str,
        *,
        credential: str,
        near_cache: bool = False,
        tls: bool = False,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        read_timeout: float = 1.0,
        write_timeout: float = 10.0,
        cache_max_entries: int = 100_000,
        staleness_bound: float = 5.0,
        heartbeat_timeout: float = 3.0,
        throttle: bool = True,
        throttle_k: float = 2.0,
        channel_args: Sequence[tuple[str, str | int]] = (),
    ) -> None:
        """`credential`: the bearer token. TLS when `tls` or any certificate is given
        (`root_certificates`: the CA to trust, else the system's; `private_key` and
        `certificate_chain`: mutual TLS). `staleness_bound`: how long after the change
        stream's last message cached answers may still be served (flagged stale) while
        the stream is down; then reads go to the server."""
        options = [*channel_options(), *channel_args]
        if tls or root_certificates or private_key or certificate_chain:
            credentials = grpc.ssl_channel_credentials(
                root_certificates, private_key, certificate_chain
            )
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._metadata = (("authorization", f"Bearer {credential}"),)
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._entitlements = entitlement_service_pb2_grpc.EntitlementServiceStub(self._channel)
        self._offers = offer_service_pb2_grpc.OfferServiceStub(self._channel)
        self._events = subscription_event_service_pb2_grpc.SubscriptionEventServiceStub(
            self._channel
        )
        self.throttle = AdaptiveThrottle(throttle_k) if throttle else None
        # RPCs sent (unary; not counting gRPC's own retries), for callers' metrics.
        self.rpcs = 0
        self.cache: NearCache | None = None
        self._follower: ChangeFollower | None = None
        if near_cache:
            self.cache = NearCache(
                cache_max_entries,
                staleness_bound=staleness_bound,
                heartbeat_timeout=heartbeat_timeout,
            )
            self._follower = ChangeFollower(self._entitlements, self._metadata, self.cache)
            self._follower.start()  # never waited for

    # -- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> EntitlementsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._follower is not None:
            self._follower.close()
        self._channel.close()

    @property
    def change_stream(self) -> ChangeFollower | None:
        return self._follower

    # -- reads ------------------------------------------------------------------------

    def get_entitlement(
        self,
        user_id: str,
        feature_id: str,
        *,
        consistency_token: str = "",
        full_consistency: bool = False,
        timeout: float | None = None,
    ) -> Entitlement:
        cache = self.cache
        if cache is not None and not full_consistency:
            hit: Entitlement | None = cache.lookup(
                (_ENTITLEMENT, user_id, feature_id), consistency_token
            )
            if hit is not None:
                return hit
        ticket, consistency = self._consistency(user_id, consistency_token, full_consistency)
        response = self._call(
            self._entitlements.GetEntitlement,
            entitlement_service_pb2.GetEntitlementRequest(
                user_id=user_id, feature_id=feature_id, consistency=consistency
            ),
            timeout or self._read_timeout,
        )
        value = Entitlement.from_proto(response.entitlement, response.stale)
        if cache is not None and not response.stale:
            cache.store(
                (_ENTITLEMENT, user_id, feature_id),
                user_id,
                value,
                valid_until_epoch(response.entitlement),
                consistency.consistency_token,
                ticket,
            )
        return value

    def list_entitlements(
        self,
        user_id: str,
        *,
        consistency_token: str = "",
        full_consistency: bool = False,
        timeout: float | None = None,
    ) -> Entitlements:
        cache = self.cache
        if cache is not None and not full_consistency:
            hit: Entitlements | None = cache.lookup((_LIST, user_id), consistency_token)
            if hit is not None:
                return hit
        ticket, consistency = self._consistency(user_id, consistency_token, full_consistency)
        response = self._call(
            self._entitlements.ListEntitlements,
            entitlement_service_pb2.ListEntitlementsRequest(
                user_id=user_id, consistency=consistency
            ),
            timeout or self._read_timeout,
        )
        value = Entitlements(
            tuple(Entitlement.from_proto(e, response.stale) for e in response.entitlements),
            response.stale,
        )
        if cache is not None and not response.stale:
            expires = min((valid_until_epoch(e) for e in response.entitlements), default=_NEVER)
            cache.store(
                (_LIST, user_id), user_id, value, expires, consistency.consistency_token, ticket
            )
        return value

    def batch_get_entitlements(
        self,
        queries: Sequence[tuple[str, str]],
        *,
        consistency_token: str = "",
        full_consistency: bool = False,
        timeout: float | None = None,
    ) -> list[Entitlement]:
        """Decisions for (user id, feature id) pairs, in order (1 to 100). With the near
        cache, only the pairs it cannot answer go to the server, in one call."""
        cache = self.cache
        answers: list[Entitlement | None] = [None] * len(queries)
        if cache is not None and not full_consistency and not consistency_token:
            for index, (user_id, feature_id) in enumerate(queries):
                answers[index] = cache.lookup((_ENTITLEMENT, user_id, feature_id))
        missing = [index for index, answer in enumerate(answers) if answer is None]
        if not missing:
            return answers  # type: ignore[return-value]
        ticket = cache.ticket() if cache is not None else 0
        consistency = common_pb2.ReadConsistency(
            consistency_token=consistency_token, full_consistency=full_consistency
        )
        if cache is not None and not consistency_token and not full_consistency:
            # One consistency for the whole call: one user's required token, or full
            # consistency when several users (or a derived change) require one.
            required = {
                requirement.token
                for index in missing
                if (requirement := cache.requirement(queries[index][0])) is not None
            }
            if len(required) == 1 and "" not in required:
                consistency.consistency_token = required.pop()
            elif required:
                consistency.full_consistency = True
        response = self._call(
            self._entitlements.BatchGetEntitlements,
            entitlement_service_pb2.BatchGetEntitlementsRequest(
                queries=[
                    entitlement_service_pb2.EntitlementQuery(
                        user_id=queries[i][0], feature_id=queries[i][1]
                    )
                    for i in missing
                ],
                consistency=consistency,
            ),
            timeout or self._read_timeout,
        )
        for index, message in zip(missing, response.entitlements, strict=True):
            value = Entitlement.from_proto(message, response.stale)
            answers[index] = value
            if cache is not None and not response.stale and not consistency_token:
                user_id, feature_id = queries[index]
                cache.store(
                    (_ENTITLEMENT, user_id, feature_id),
                    user_id,
                    value,
                    valid_until_epoch(message),
                    "",
                    ticket,
                )
        return answers  # type: ignore[return-value]

    def get_offers(
        self,
        user_id: str,
        market: str,
        platform: str | int,
        *,
        include_ineligible: bool = False,
        consistency_token: str = "",
        full_consistency: bool = False,
        timeout: float | None = None,
    ) -> Offers:
        """`platform`: "web", "ios", "android", "desktop" (or the enum's value)."""
        platform_value = _platform(platform)
        key = (_OFFERS, user_id, market, platform_value, include_ineligible)
        cache = self.cache
        if cache is not None and not full_consistency:
            hit: Offers | None = cache.lookup(key, consistency_token)
            if hit is not None:
                return hit
        ticket, consistency = self._consistency(user_id, consistency_token, full_consistency)
        response = self._call(
            self._offers.GetOffers,
            offer_service_pb2.GetOffersRequest(
                user_id=user_id,
                market=market,
                platform=platform_value,  # type: ignore[arg-type]
                include_ineligible=include_ineligible,
                consistency=consistency,
            ),
            timeout or self._read_timeout,
        )
        value = Offers.from_proto(response)
        if cache is not None and not response.stale:
            cache.store(
                key,
                user_id,
                value,
                valid_until_epoch(response),
                consistency.consistency_token,
                ticket,
            )
        return value

    # -- writes: the request messages of SubscriptionEventService ---------------------

    def record_subscription_event(
        self, request: events_pb2.RecordSubscriptionEventRequest, *, timeout: float | None = None
    ) -> events_pb2.RecordSubscriptionEventResponse:
        response = self._write(self._events.RecordSubscriptionEvent, request, timeout)
        self._written(request.user_id, response.consistency_token)
        return response

    def grant_entitlement(
        self, request: events_pb2.GrantEntitlementRequest, *, timeout: float | None = None
    ) -> events_pb2.GrantEntitlementResponse:
        response = self._write(self._events.GrantEntitlement, request, timeout)
        self._written(request.user_id, response.consistency_token)
        return response

    def revoke_entitlement(
        self, request: events_pb2.RevokeEntitlementRequest, *, timeout: float | None = None
    ) -> events_pb2.RevokeEntitlementResponse:
        response = self._write(self._events.RevokeEntitlement, request, timeout)
        self._written(request.user_id, response.consistency_token)
        return response

    def redeem_offer(
        self, request: events_pb2.RedeemOfferRequest, *, timeout: float | None = None
    ) -> events_pb2.RedeemOfferResponse:
        response = self._write(self._events.RedeemOffer, request, timeout)
        self._written(request.user_id, response.consistency_token)
        return response

    def create_household(
        self, request: events_pb2.CreateHouseholdRequest, *, timeout: float | None = None
    ) -> events_pb2.CreateHouseholdResponse:
        response = self._write(self._events.CreateHousehold, request, timeout)
        self._written(request.manager_user_id, response.consistency_token)
        return response

    def add_household_member(
        self, request: events_pb2.AddHouseholdMemberRequest, *, timeout: float | None = None
    ) -> events_pb2.AddHouseholdMemberResponse:
        response = self._write(self._events.AddHouseholdMember, request, timeout)
        self._written(request.member_user_id, response.consistency_token)
        self._written(request.manager_user_id, response.manager_consistency_token)
        return response

    def remove_household_member(
        self, request: events_pb2.RemoveHouseholdMemberRequest, *, timeout: float | None = None
    ) -> events_pb2.RemoveHouseholdMemberResponse:
        response = self._write(self._events.RemoveHouseholdMember, request, timeout)
        self._written(request.member_user_id, response.consistency_token)
        self._written(request.manager_user_id, response.manager_consistency_token)
        return response

    def record_student_verification(
        self,
        request: events_pb2.RecordStudentVerificationRequest,
        *,
        timeout: float | None = None,
    ) -> events_pb2.RecordStudentVerificationResponse:
        response = self._write(self._events.RecordStudentVerification, request, timeout)
        self._written(request.user_id, response.consistency_token)
        return response

    def revoke_student_verification(
        self,
        request: events_pb2.RevokeStudentVerificationRequest,
        *,
        timeout: float | None = None,
    ) -> events_pb2.RevokeStudentVerificationResponse:
        response = self._write(self._events.RevokeStudentVerification, request, timeout)
        self._written(request.user_id, response.consistency_token)
        return response

    # -- plumbing ---------------------------------------------------------------------

    def _consistency(
        self, user_id: str, token: str, full: bool
    ) -> tuple[int, common_pb2.ReadConsistency]:
        """The near cache's ticket (taken before the requirement is read: a change that
        comes after it keeps the answer out of the cache) and the read's consistency:
        the caller's, else what a change or a write of the user requires."""
        cache = self.cache
        if cache is None:
            return 0, common_pb2.ReadConsistency(consistency_token=token, full_consistency=full)
        ticket = cache.ticket()
        if not token and not full:
            required = cache.requirement(user_id)
            if required is not None:
                token, full = required.token, required.full_consistency
        return ticket, common_pb2.ReadConsistency(consistency_token=token, full_consistency=full)

    def _written(self, user_id: str, token: str) -> None:
        if self.cache is not None and user_id:
            self.cache.invalidate(user_id, token)

    def _write(
        self, method: Callable[..., Response], request: Any, timeout: float | None
    ) -> Response:
        return self._call(method, request, timeout or self._write_timeout)

    def _call(self, method: Callable[..., Response], request: Any, timeout: float) -> Response:
        throttle = self.throttle
        if throttle is not None and not throttle.admit():
            raise Throttled()
        self.rpcs += 1
        try:
            response = method(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
            if throttle is not None and code not in _REJECTED:
                throttle.accepted()
            details = error.details() if isinstance(error, grpc.Call) else str(error)
            raise EntitlementsError(code, details or "") from error
        if throttle is not None:
            throttle.accepted()
        return response


_NEVER = float("inf")
