"""The choices of the CLI's enum flags: the values of the domain enums (`--store app_store`),
sent as the proto values that service.grpc_api.convert pairs those enums with."""

from __future__ import annotations

from entitlements.v1 import common_pb2
from entitlements.v1 import subscription_event_service_pb2 as events_pb2
from service.grpc_api.convert import (
    EVENT_TYPE_TO_PROTO,
    GRANT_KIND_TO_PROTO,
    PLATFORM_TO_PROTO,
    STORE_TO_PROTO,
)

PLATFORMS: dict[str, common_pb2.Platform.ValueType] = {
    platform.value: value for platform, value in PLATFORM_TO_PROTO.items()
}
STORES: dict[str, common_pb2.Store.ValueType] = {
    store.value: value for store, value in STORE_TO_PROTO.items()
}
GRANT_KINDS: dict[str, events_pb2.GrantKind.ValueType] = {
    kind.value: value for kind, value in GRANT_KIND_TO_PROTO.items()
}
EVENT_TYPES: dict[str, events_pb2.SubscriptionEventType.ValueType] = {
    event_type.value: value for event_type, value in EVENT_TYPE_TO_PROTO.items()
}
