"""A client in another language (Node.js, @grpc/grpc-js) built from protos/ alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.harness import Harness

NODE_CLIENT = Path(__file__).resolve().parent.parent / "interop" / "node"


def test_node_client_from_protos_alone(harness: Harness) -> None:
    node = shutil.which("node")
    if node is None or not (NODE_CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        reason = "node or tests/interop/node/node_modules missing (run: make interop-deps)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    result = subprocess.run(
        [
            node,
            str(NODE_CLIENT / "client.js"),
            harness.target,
            harness.service_token,
            harness.admin_token,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answer = json.loads(result.stdout)
    entitlement = answer["entitlement"]["entitlement"]
    assert entitlement["granted"] is True
    assert entitlement["source"]["type"] == "SOURCE_TYPE_SUBSCRIPTION"
    assert entitlement["state"] == "ENTITLEMENT_STATE_ACTIVE"
    offer_ids = [o["offer_id"] for o in answer["offers"]["offers"]]
    assert "premium-individual-trial-1m" in offer_ids
    assert {o["regular_price"]["currency_code"] for o in answer["offers"]["offers"]} == {"SEK"}
    assert answer["invalid"]["code"] == 3  # INVALID_ARGUMENT
    assert answer["anonymous"]["code"] == 16  # UNAUTHENTICATED
    first, then = answer["watch"]["messages"]
    assert first["reason"] == "WATCH_REASON_INITIAL"
    assert first["entitlements"][0]["granted"] is False
    assert then["reason"] == "WATCH_REASON_WRITE"
    assert then["entitlements"][0]["granted"] is True
    assert then["consistency_token"] != first["consistency_token"]
