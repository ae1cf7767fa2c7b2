"""A real server on a free loopback port, backed by a real SQLite file seeded with the demo
users, with a fixed clock so every decision is reproducible."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from entitlements.v1 import entitlement_service_pb2_grpc, offer_service_pb2_grpc
from service.config import Settings
from service.demo import seed_demo
from service.server import RunningServer, start_server
from storage.sqlite import SqliteRepository

# Inside the example catalog's holiday discount window (2026-11-20 .. 2027-01-06).
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@dataclass
class Harness:
    running: RunningServer
    channel: grpc.Channel
    entitlements: entitlement_service_pb2_grpc.EntitlementServiceStub
    offers: offer_service_pb2_grpc.OfferServiceStub
    db_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    db_path = tmp_path_factory.mktemp("server") / "entitlements.db"
    seeder = SqliteRepository(db_path)
    seed_demo(seeder, NOW)
    seeder.close()
    settings = Settings(host="127.0.0.1", port=0, storage_url=f"sqlite:///{db_path}")
    running = start_server(settings, clock=lambda: NOW)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield Harness(
            running,
            channel,
            entitlement_service_pb2_grpc.EntitlementServiceStub(channel),
            offer_service_pb2_grpc.OfferServiceStub(channel),
            db_path,
        )
    finally:
        channel.close()
        running.stop(grace_seconds=1)
