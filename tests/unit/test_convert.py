"""The protobuf conversion's own timestamp setter agrees with protobuf's; its enum maps pair
domain and proto enum members by name."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from entitlements.v1 import common_pb2
from service.domain.account import Store
from service.grpc_api.convert import enum_map, inverse, timestamp

aware = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    ),
)


@given(aware)
def test_timestamp_matches_from_datetime(value: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(value)
    assert timestamp(value) == expected


def test_enum_map_pairs_members_by_name() -> None:
    to_proto = enum_map(Store, common_pb2.Store, "STORE_")
    assert to_proto == {
        Store.WEB: common_pb2.STORE_WEB,
        Store.APP_STORE: common_pb2.STORE_APP_STORE,
        Store.GOOGLE_PLAY: common_pb2.STORE_GOOGLE_PLAY,
        Store.PARTNER: common_pb2.STORE_PARTNER,
    }
    assert inverse(to_proto)[common_pb2.STORE_WEB] is Store.WEB


class _WiderStore(enum.Enum):
    WEB = "web"
    CONSOLE = "console"  # no STORE_CONSOLE in the proto
    KIOSK = "kiosk"


def test_enum_map_refuses_a_domain_member_without_a_proto_value() -> None:
    with pytest.raises(ValueError, match="STORE_CONSOLE, STORE_KIOSK"):
        enum_map(_WiderStore, common_pb2.Store, "STORE_")
