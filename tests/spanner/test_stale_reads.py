"""Token-less cache misses read at bounded staleness on Spanner only where the change
feed vouches for the user (service.usecases.stale_reads), through two real servers on
one emulator database (two replicas): a user nobody wrote is read stale; a user the
feed has just told of a write is never answered from before it (the stale read is too
old, a strong read follows); a read with the write's token reads strongly."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from entitlements.v1 import common_pb2
from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import entitlement_service_pb2_grpc as es_grpc
from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements.v1 import subscription_event_service_pb2_grpc as ev_grpc
from service.bootstrap import STALE_READ_MARGIN_SECONDS
from service.config import Settings
from service.grpc_api.auth import with_bearer_token
from service.grpc_api.server import RunningServer, start_server
from storage.spanner import DatabasePath, SpannerRepository
from tests.spanner_emulator import SpannerEmulator
from tests.support.harness import ADMIN_TOKEN, SERVICE_TOKEN, write_test_credentials
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(180)

STALE_SECONDS = 4.0


@contextmanager
def replica(
    emulator: SpannerEmulator, database: DatabasePath, folder: Path
) -> Iterator[tuple[RunningServer, grpc.Channel]]:
    settings = Settings(
        host="127.0.0.1",
        port=0,
        storage_url=database.url,
        credentials_file=write_test_credentials(folder / "credentials.yaml"),
        store_timeout_seconds=5.0,  # a busy machine: the emulator may be slow
        write_timeout_seconds=10.0,
    )
    repository = SpannerRepository(
        database, endpoint=emulator.host, stale_read=timedelta(seconds=STALE_SECONDS)
    )
    running = start_server(settings, repository=repository)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield running, channel
    finally:
        channel.close()
        running.stop(grace_seconds=0)


def stale_reads(running: RunningServer) -> dict[str, int]:
    repository = running.app.repository
    assert isinstance(repository, SpannerRepository)
    return dict(repository.stale_reads)


def test_misses_read_stale_only_where_the_feed_vouches_for_the_user(
    spanner_emulator: SpannerEmulator, tmp_path: Path
) -> None:
    database = spanner_emulator.create_database("stale")
    with (
        replica(spanner_emulator, database, tmp_path) as (_, into_writer),
        replica(spanner_emulator, database, tmp_path) as (reader, into_reader),
    ):
        reads = es_grpc.EntitlementServiceStub(with_bearer_token(into_reader, SERVICE_TOKEN))
        writes = ev_grpc.SubscriptionEventServiceStub(with_bearer_token(into_writer, ADMIN_TOKEN))

        def granted(user_id: str, token: str = "") -> bool:
            request = es.GetEntitlementRequest(
                user_id=user_id,
                feature_id="offline_downloads",
                consistency=common_pb2.ReadConsistency(consistency_token=token),
            )
            return bool(reads.GetEntitlement(request, timeout=30).entitlement.granted)

        # Until the reader has followed the feed for a window, every miss reads strongly.
        assert not granted("nobody-0")
        assert stale_reads(reader) == {"kept": 0, "too old": 0}
        time.sleep(STALE_SECONDS + STALE_READ_MARGIN_SECONDS + 0.5)
        assert not granted("nobody-1")
        assert stale_reads(reader) == {"kept": 1, "too old": 0}

        written = writes.GrantEntitlement(
            ev.GrantEntitlementRequest(
                request_id="stale-1",
                user_id="buyer",
                grant=ev.Grant(kind=ev.GRANT_KIND_SUPPORT, feature_id="offline_downloads"),
            ),
            timeout=30,
        )
        acknowledged = time.monotonic()
        # The reader's feed tells it of the write; then its first read of the buyer
        # must not come from before the write (the stale snapshot is too old).
        follower = reader.app.feed
        assert follower is not None
        eventually(
            lambda: follower.stats.changes >= 1,
            30,
            0.05,
            "the reader's feed never told of the write",
        )
        assert granted("buyer")
        if time.monotonic() - acknowledged < STALE_SECONDS:
            assert stale_reads(reader)["too old"] == 1
        # A read with the write's token reads strongly (no stale read is tried).
        before = stale_reads(reader)
        reader.app.cache.expire_all()
        assert granted("buyer", written.consistency_token)
        assert stale_reads(reader) == before
