"""The fixed requests h2load sends for each scenario, and how their answers are checked.

h2load sends one request over and over, so each workload has one: the users and feature
the floor's constant answers are decided for (benchmarks/floor_server.py), so that the
service's answer is the floor's (same size, same content). A scenario with
`distinct_users` sends one request per connection, each for another of its users (the
cache-miss scenario: with one user, single flight would share one store read between
the RPCs in flight).

Before any load, each request is sent once with a real gRPC client (h2load counts gRPC
errors as HTTP 200): the answer must be OK and be the answer to that request.
"""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.data import SERVICE_TOKEN, bench_user_ids
from benchmarks.floor_server import (
    BATCH_SIZE,
    ENTITLEMENT_FEATURE,
    ENTITLEMENT_USER,
    OFFERS_MARKET,
    OFFERS_USER,
    batch_queries,
)
from benchmarks.load.h2load import Target
from benchmarks.load.plan import BATCH, GET, OFFERS
from benchmarks.load.scenarios import Scenario

ENTITLEMENTS = "/entitlements.v1.EntitlementService/"
PATHS = {
    GET: ENTITLEMENTS + "GetEntitlement",
    BATCH: ENTITLEMENTS + "BatchGetEntitlements",
    OFFERS: "/entitlements.v1.OfferService/GetOffers",
}


class WrongAnswer(ValueError):
    """The answer parses but is not the answer to the request sent."""


def _get_request(user_id: str) -> bytes:
    from entitlements.v1 import entitlement_service_pb2

    message = entitlement_service_pb2.GetEntitlementRequest(
        user_id=user_id, feature_id=ENTITLEMENT_FEATURE
    )
    return message.SerializeToString()


def requests(scenario: Scenario, connections: int) -> tuple[bytes, ...]:
    """The serialized request(s) h2load sends for the scenario (one per connection with
    distinct users, else one)."""
    from entitlements.v1 import common_pb2, entitlement_service_pb2, offer_service_pb2

    kind = scenario.workload.kind
    if kind not in PATHS:
        raise ValueError(f"h2load cannot send the {kind!r} workload ({scenario.key})")
    if kind == GET:
        if not scenario.distinct_users:
            return (_get_request(ENTITLEMENT_USER),)
        users = bench_user_ids(scenario.workload.users)
        step = max(1, len(users) // max(1, connections))
        return tuple(_get_request(users[(i * step) % len(users)]) for i in range(connections))
    if kind == OFFERS:
        offers = offer_service_pb2.GetOffersRequest(
            user_id=OFFERS_USER, market=OFFERS_MARKET, platform=common_pb2.PLATFORM_WEB
        )
        return (offers.SerializeToString(),)
    batch = entitlement_service_pb2.BatchGetEntitlementsRequest(
        queries=[
            entitlement_service_pb2.EntitlementQuery(user_id=user, feature_id=feature)
            for user, feature in batch_queries()
        ]
    )
    return (batch.SerializeToString(),)


def target(scenario: Scenario, host: str, port: int, connections: int) -> Target:
    """The h2load target of the scenario on a server (floors get the same bearer token
    header as the service, so that the bytes on the wire are the same)."""
    first, *more = requests(scenario, connections)
    path = PATHS[scenario.workload.kind]
    return Target(host, port, path, first, SERVICE_TOKEN, tuple(more))


def checker(scenario: Scenario) -> Callable[[bytes], object]:
    """Parses an answer to the scenario's request and checks it answers it (the floor
    answers constants for the same users, so the same checks hold)."""
    from entitlements.v1 import entitlement_service_pb2, offer_service_pb2

    kind = scenario.workload.kind

    def check(data: bytes) -> object:
        if kind == GET:
            get = entitlement_service_pb2.GetEntitlementResponse.FromString(data)
            if get.entitlement.feature_id != ENTITLEMENT_FEATURE:
                raise WrongAnswer(f"answer for feature {get.entitlement.feature_id!r}")
            return get
        if kind == BATCH:
            batch = entitlement_service_pb2.BatchGetEntitlementsResponse.FromString(data)
            if len(batch.entitlements) != BATCH_SIZE:
                raise WrongAnswer(f"{len(batch.entitlements)} entitlements, not {BATCH_SIZE}")
            return batch
        offers = offer_service_pb2.GetOffersResponse.FromString(data)
        if not offers.catalog_version:
            raise WrongAnswer("no catalog version")
        return offers

    return check
