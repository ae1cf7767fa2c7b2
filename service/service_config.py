"""The gRPC service config shipped to client teams: how a client balances its calls over the
servers (round_robin), which calls it retries by itself, how, and the longest it waits for
each. The `entitlements` CLI's channels use it
(service/cli/call.py); clients/service_config.json is this config as JSON for other
languages and the stubs package (`python -m service.service_config >
clients/service_config.json` after a change; tests/test_service_config.py checks they agree).

Retried: UNAVAILABLE (the store or a server is briefly unreachable) and RESOURCE_EXHAUSTED
(a worker shedding load refuses before doing any work), as every RPC's comment asks. Both
are safe on every unary RPC: the reads have no effect, and every write is idempotent on its
client-supplied event_id or request_id, which a retry resends unchanged (a replay answers
with the first write's consistency token). Never retried: DEADLINE_EXCEEDED (the caller's
budget is spent), INVALID_ARGUMENT, FAILED_PRECONDITION (a store event's "redeliver later"
is the event pipeline's own retry, on its own schedule), the credential errors.
retryThrottling stops retries while more than about 1 call in 10 fails, so a struggling
server is not sent more calls than it was. The timeout is a default deadline: a caller's
shorter deadline wins, and it bounds all attempts together."""

from __future__ import annotations

import json
from typing import Any, Final

PACKAGE = "entitlements.v1"

# Unary reads. The server caps each call at max_rpc_seconds (5 s by default).
READS: Final = (
    ("EntitlementService", "GetEntitlement"),
    ("EntitlementService", "ListEntitlements"),
    ("EntitlementService", "BatchGetEntitlements"),
    ("OfferService", "GetOffers"),
    ("AdminService", "GetUserHistory"),
)
# Every write, idempotent on its event_id or request_id.
WRITES: Final = (
    ("SubscriptionEventService", "RecordSubscriptionEvent"),
    ("SubscriptionEventService", "GrantEntitlement"),
    ("SubscriptionEventService", "RevokeEntitlement"),
    ("SubscriptionEventService", "RedeemOffer"),
    ("SubscriptionEventService", "CreateHousehold"),
    ("SubscriptionEventService", "AddHouseholdMember"),
    ("SubscriptionEventService", "RemoveHouseholdMember"),
    ("SubscriptionEventService", "RecordStudentVerification"),
    ("SubscriptionEventService", "RevokeStudentVerification"),
)
# Server streams: retried only until the server has answered (gRPC never replays a stream
# that has sent anything; resuming is the client's, with resume_token); no default
# deadline, as a watch lives for as long as the client wants it.
STREAMS: Final = (
    ("EntitlementService", "WatchEntitlements"),
    ("EntitlementService", "WatchChanges"),
)

RETRYABLE_STATUS_CODES: Final = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")


def _names(methods: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"service": f"{PACKAGE}.{service}", "method": method} for service, method in methods]


def _retry_policy(max_attempts: int) -> dict[str, Any]:
    return {
        "maxAttempts": max_attempts,
        "initialBackoff": "0.1s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": list(RETRYABLE_STATUS_CODES),
    }


# Balancing per RPC over every address the target resolves to. In Kubernetes the Service is
# headless (deploy/kubernetes/service.yaml): `dns:///entitlements.NAMESPACE.svc...:50051`
# resolves to every ready pod, and without this the default pick_first would send every
# RPC of a client to one of them. Re-resolved when the server ends a connection
# (max_connection_age_seconds), so new pods get traffic. No client-side health checking:
# the server's health follows the store, and a client checking it would refuse every call
# in a store outage that the servers answer from their caches (stale-if-error); DNS
# publishes only ready pods anyway.
LOAD_BALANCING: Final = "round_robin"

SERVICE_CONFIG: Final[dict[str, Any]] = {
    "loadBalancingConfig": [{LOAD_BALANCING: {}}],
    "methodConfig": [
        {"name": _names(READS), "timeout": "5s", "retryPolicy": _retry_policy(3)},
        # Writes may take the server's whole 5 s on a busy store; 10 s leaves a retry room.
        {"name": _names(WRITES), "timeout": "10s", "retryPolicy": _retry_policy(3)},
        {"name": _names(STREAMS), "retryPolicy": _retry_policy(3)},
    ],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
}


def service_config_json() -> str:
    """The config as the JSON text of clients/service_config.json."""
    return json.dumps(SERVICE_CONFIG, indent=2) + "\n"


def channel_options() -> list[tuple[str, str | int]]:
    """Channel arguments that put the config in force on a grpc channel."""
    return [
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ("grpc.enable_retries", 1),
    ]


if __name__ == "__main__":
    print(service_config_json(), end="")
