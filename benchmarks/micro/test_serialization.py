"""Request parsing and response building (service.grpc_api.convert) and the servicer handlers
without a network: what the service adds to the framework per RPC, besides the
interceptors (whose authentication is measured here too)."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.coroutines import completed
from benchmarks.data import SERVICE_TOKEN, user_id
from entitlements.v1 import common_pb2, entitlement_service_pb2, offer_service_pb2
from service.domain.rules import Platform
from service.grpc_api import convert
from service.grpc_api.auth import Authenticator, Credential, Principal, Role, token_digest
from service.grpc_api.servicers import EntitlementServicer, OfferServicer
from service.usecases.change_streams import ChangeStreams
from service.usecases.reads import ReadService
from service.usecases.tokens import issue_token
from service.usecases.watch import WatchService

GET_REQUEST = entitlement_service_pb2.GetEntitlementRequest(
    user_id=user_id(3, "active"), feature_id="ad_free_playback"
).SerializeToString()
TOKEN_REQUEST = entitlement_service_pb2.GetEntitlementRequest(
    user_id=user_id(3, "active"),
    feature_id="ad_free_playback",
    consistency=common_pb2.ReadConsistency(consistency_token=issue_token(user_id(3, "active"), 1)),
).SerializeToString()
OFFERS_REQUEST = offer_service_pb2.GetOffersRequest(
    user_id=user_id(3, "free"), market="US", platform=common_pb2.PLATFORM_WEB
).SerializeToString()


@pytest.mark.parametrize("raw", [GET_REQUEST, TOKEN_REQUEST], ids=["plain", "with_token"])
def test_parse_get_entitlement_request(benchmark: Any, raw: bytes) -> None:
    def parse() -> Any:
        request = entitlement_service_pb2.GetEntitlementRequest.FromString(raw)
        return convert.consistency_from_proto(request.consistency)

    benchmark(parse)


def test_build_and_serialize_get_entitlement_response(
    benchmark: Any, warm_reads: ReadService
) -> None:
    decision = completed(warm_reads.get_entitlement(user_id(3, "active"), "ad_free_playback")).value
    version = warm_reads.catalog.version

    def build() -> bytes:
        return entitlement_service_pb2.GetEntitlementResponse(
            entitlement=convert.entitlement_to_proto(decision), catalog_version=version
        ).SerializeToString()

    assert len(benchmark(build)) > 100


def test_build_and_serialize_offers_response(benchmark: Any, warm_reads: ReadService) -> None:
    decisions = completed(warm_reads.get_offers(user_id(3, "free"), "US", Platform.WEB)).value
    version = warm_reads.catalog.version

    def build() -> bytes:
        return convert.offers_to_proto(decisions, False, version).SerializeToString()

    assert benchmark(build)


def test_authenticate_bearer_token(benchmark: Any) -> None:
    """What the RPC guard does per RPC to authenticate: parse the header, SHA-256, compare
    in constant time with every principal (two here, as in the load benchmark)."""
    authenticator = Authenticator(
        [
            Credential(Principal("admin", Role.ADMIN), bytes.fromhex(token_digest("other"))),
            Credential(
                Principal("service", Role.SERVICE), bytes.fromhex(token_digest(SERVICE_TOKEN))
            ),
        ]
    )
    metadata = (("authorization", f"Bearer {SERVICE_TOKEN}"), ("user-agent", "grpc-python"))
    principal = benchmark(authenticator.authenticate, metadata)
    assert principal is not None


def test_get_entitlement_handler(benchmark: Any, warm_reads: ReadService) -> None:
    """The servicer end to end without gRPC: parse bytes, read (cache hit), convert,
    serialize (interceptors excluded)."""
    servicer = EntitlementServicer(
        warm_reads,
        WatchService(warm_reads, max_watches=1),
        ChangeStreams(1, feed_position=lambda: None, feed_lost=lambda: True),
    )

    def handle() -> bytes:
        request = entitlement_service_pb2.GetEntitlementRequest.FromString(GET_REQUEST)
        response = completed(servicer.GetEntitlement(request, None))  # type: ignore[arg-type]
        data: bytes = response.SerializeToString()
        return data

    assert benchmark(handle)


def test_get_offers_handler(benchmark: Any, warm_reads: ReadService) -> None:
    servicer = OfferServicer(warm_reads)

    def handle() -> bytes:
        request = offer_service_pb2.GetOffersRequest.FromString(OFFERS_REQUEST)
        response = completed(servicer.GetOffers(request, None))  # type: ignore[arg-type]
        data: bytes = response.SerializeToString()
        return data

    assert benchmark(handle)
