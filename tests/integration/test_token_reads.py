"""Reads with consistency tokens through a real server: concurrent fresh reads of one
user share store reads, and a forged token (a version the store never had) costs no more
than an ordinary miss."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from entitlements.v1 import common_pb2
from entitlements.v1 import entitlement_service_pb2 as es
from service.usecases.tokens import issue_token
from tests.support.faulty import faulty_server


def test_forged_tokens_do_not_multiply_store_reads(tmp_path: Path) -> None:
    with faulty_server(tmp_path, threads=32, store_timeout_seconds=5.0) as server:
        server.store.delay_seconds = 0.3  # the reads overlap
        forged = issue_token("target", 10**30)
        request = es.GetEntitlementRequest(
            user_id="target",
            feature_id="offline_downloads",
            consistency=common_pb2.ReadConsistency(consistency_token=forged),
        )
        before = server.store.calls
        with ThreadPoolExecutor(60) as pool:
            answers = list(
                pool.map(lambda _: server.stub.GetEntitlement(request, timeout=10), range(240))
            )
        assert all(not a.entitlement.granted for a in answers)
        # 240 reads arriving over a few store reads' time: a handful of shared loads, not 240.
        assert server.store.calls - before <= 12, server.store.calls - before


def test_full_consistency_reads_share_a_store_read_begun_after_them(tmp_path: Path) -> None:
    with faulty_server(tmp_path, threads=32, store_timeout_seconds=5.0) as server:
        server.store.delay_seconds = 0.3
        request = es.GetEntitlementRequest(
            user_id="fresh",
            feature_id="offline_downloads",
            consistency=common_pb2.ReadConsistency(full_consistency=True),
        )
        before = server.store.calls
        with ThreadPoolExecutor(40) as pool:
            list(pool.map(lambda _: server.stub.GetEntitlement(request, timeout=10), range(40)))
        assert server.store.calls - before <= 6, server.store.calls - before
