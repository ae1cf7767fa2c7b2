"""What the client's reads return: immutable values (a cached answer is shared by every
caller that gets it), converted once from the protobuf responses."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from entitlements.v1 import common_pb2, entitlement_service_pb2, offer_service_pb2


def _enum_name(name: str, prefix: str) -> str:
    """SOURCE_TYPE_SUBSCRIPTION -> SUBSCRIPTION; the zero value -> ""."""
    short = name.removeprefix(prefix)
    return "" if short == "UNSPECIFIED" else short


def _time(message: object, field: str) -> datetime | None:
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    stamp: Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC)


def _epoch(message: object, field: str) -> float:
    """The timestamp as seconds since the epoch; infinity when unset."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return float("inf")
    stamp: Timestamp = getattr(message, field)
    return stamp.seconds + stamp.nanos / 1e9


@dataclass(frozen=True, slots=True)
class Entitlement:
    """One decision: may `user_id` use `feature_id` now, why, and until when it holds."""

    user_id: str
    feature_id: str
    granted: bool
    # For QUOTA features, the granted amount; 0 otherwise.
    quota_value: int
    # "BOOLEAN" or "QUOTA".
    feature_kind: str
    # "SUBSCRIPTION", "GRANT", "HOUSEHOLD", "FREE_TIER"; "" when not granted.
    source_type: str
    source_id: str
    # "WEB", "APP_STORE", "GOOGLE_PLAY", "PARTNER"; "" for grants and the free tier.
    store: str
    # "ACTIVE", "TRIAL", "GRACE_PERIOD", "CANCELED_UNTIL_PERIOD_END"; "" when not granted.
    state: str
    plan_id: str
    expires_at: datetime | None
    # The earliest time the decision can change by itself (None: no scheduled change);
    # the near cache never serves it past this time.
    valid_until: datetime | None
    # Why not granted ("" when granted).
    denial_reason: str
    user_never_seen: bool
    # True when the answer may be out of date: the server said so (its store was
    # unreachable), or the near cache served it while its change stream was down
    # (within the client's staleness bound).
    stale: bool = False

    @classmethod
    def from_proto(cls, message: entitlement_service_pb2.Entitlement, stale: bool) -> Entitlement:
        return cls(
            user_id=message.user_id,
            feature_id=message.feature_id,
            granted=message.granted,
            quota_value=message.quota_value,
            feature_kind=_enum_name(
                entitlement_service_pb2.FeatureKind.Name(message.feature_kind), "FEATURE_KIND_"
            ),
            source_type=_enum_name(
                entitlement_service_pb2.SourceType.Name(message.source.type), "SOURCE_TYPE_"
            ),
            source_id=message.source.id,
            store=_enum_name(common_pb2.Store.Name(message.source.store), "STORE_"),
            state=_enum_name(
                entitlement_service_pb2.EntitlementState.Name(message.state), "ENTITLEMENT_STATE_"
            ),
            plan_id=message.plan_id,
            expires_at=_time(message, "expires_at"),
            valid_until=_time(message, "valid_until"),
            denial_reason=_enum_name(
                entitlement_service_pb2.DenialReason.Name(message.denial_reason), "DENIAL_REASON_"
            ),
            user_never_seen=message.user_never_seen,
            stale=stale,
        )

    def as_stale(self) -> Entitlement:
        return self if self.stale else dataclasses.replace(self, stale=True)


@dataclass(frozen=True, slots=True)
class Entitlements:
    """ListEntitlements' answer: every feature of the catalog, in catalog order."""

    entitlements: tuple[Entitlement, ...]
    stale: bool = False

    def as_stale(self) -> Entitlements:
        if self.stale:
            return self
        return Entitlements(tuple(e.as_stale() for e in self.entitlements), stale=True)


@dataclass(frozen=True, slots=True)
class Offers:
    """GetOffers' answer. `response` is shared with the near cache: read it, never change
    it (copy it first: `type(r)(); copy.CopyFrom(r)`)."""

    response: offer_service_pb2.GetOffersResponse
    valid_until: datetime | None
    stale: bool = False

    @classmethod
    def from_proto(cls, response: offer_service_pb2.GetOffersResponse) -> Offers:
        return cls(response, _time(response, "valid_until"), response.stale)

    def as_stale(self) -> Offers:
        return self if self.stale else dataclasses.replace(self, stale=True)


def valid_until_epoch(message: object) -> float:
    """A message's valid_until in seconds since the epoch (infinity when unset)."""
    return _epoch(message, "valid_until")
