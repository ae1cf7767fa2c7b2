"""The access policy: which role may call which service, and the decision for one call.

Deny by default: the read services need the role `service` or `admin`, the write service
and the admin service (support tooling) `admin`; only health checks and server reflection
are open; any other method is refused. A missing, malformed or unknown credential is
refused UNAUTHENTICATED, a known one lacking the role PERMISSION_DENIED. The decision is a
pure function of the rule and the principal, free of any call context.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc

from entitlements.v1 import (
    admin_service_pb2,
    entitlement_service_pb2,
    offer_service_pb2,
    subscription_event_service_pb2,
)
from service.grpc_api.auth.credentials import Principal, Role


@dataclass(frozen=True, slots=True)
class MethodRule:
    open: bool = False  # no credential needed
    roles: frozenset[Role] = frozenset()  # empty and not open: nobody may call
    audited: bool = False


DENY = MethodRule()
OPEN = MethodRule(open=True)
READ = MethodRule(roles=frozenset({Role.SERVICE, Role.ADMIN}))
ADMIN = MethodRule(roles=frozenset({Role.ADMIN}), audited=True)

ENTITLEMENT_SERVICE = entitlement_service_pb2.DESCRIPTOR.services_by_name[
    "EntitlementService"
].full_name
OFFER_SERVICE = offer_service_pb2.DESCRIPTOR.services_by_name["OfferService"].full_name
EVENT_SERVICE = subscription_event_service_pb2.DESCRIPTOR.services_by_name[
    "SubscriptionEventService"
].full_name
# Support tooling (`entitlements history`): admin credentials only, audited.
ADMIN_SERVICE = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
# Load balancers probe health, and grpcurl needs reflection, without credentials.
OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


@dataclass(frozen=True)
class AccessPolicy:
    """Rules per fully qualified service name; a service not listed is denied."""

    services: Mapping[str, MethodRule]

    def rule_for(self, method: str) -> MethodRule:
        """`method` as gRPC names it: "/package.Service/Method"."""
        service, slash, name = method.lstrip("/").rpartition("/")
        if not slash or not service or not name:
            return DENY
        return self.services.get(service, DENY)


DEFAULT_POLICY = AccessPolicy(
    {
        ENTITLEMENT_SERVICE: READ,
        OFFER_SERVICE: READ,
        EVENT_SERVICE: ADMIN,
        ADMIN_SERVICE: ADMIN,
        **dict.fromkeys(OPEN_SERVICES, OPEN),
    }
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call may not proceed: the status it ends with and the details sent."""

    code: grpc.StatusCode
    details: str


UNAUTHENTICATED = Refusal(
    grpc.StatusCode.UNAUTHENTICATED,
    "missing or invalid credential: send 'authorization: Bearer <token>' metadata",
)


def access_check(
    method: str, rule: MethodRule
) -> Callable[[Principal | None], Principal | Refusal]:
    """The decision for calls of `method` (as gRPC names it) under a rule that is not open:
    given the authenticated principal (None: none), that principal when it may call, else
    the refusal. Made once per method, so the refusal's details are formatted once."""
    denied = Refusal(
        grpc.StatusCode.PERMISSION_DENIED,
        f"this credential's role may not call {method.lstrip('/')}",
    )

    def check(principal: Principal | None) -> Principal | Refusal:
        if principal is None:
            return UNAUTHENTICATED
        if principal.role not in rule.roles:
            return denied
        return principal

    return check
