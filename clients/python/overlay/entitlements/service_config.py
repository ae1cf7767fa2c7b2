"""The service team's gRPC service config: retries with backoff for UNAVAILABLE and
RESOURCE_EXHAUSTED (every unary RPC is safe to retry: reads have no effect, writes are
idempotent on their event_id or request_id), and a default deadline per RPC (5 s reads,
10 s writes; a shorter deadline of the caller wins).

    channel = grpc.insecure_channel(target, options=channel_options())
"""

from __future__ import annotations

import json
from importlib.resources import files


def service_config_json() -> str:
    """The service config (JSON), as shipped in this package."""
    return files("entitlements").joinpath("service_config.json").read_text(encoding="utf-8")


def channel_options() -> list[tuple[str, str | int]]:
    """Channel arguments that put the service config in force on a grpc channel."""
    compact = json.dumps(json.loads(service_config_json()))
    return [("grpc.service_config", compact), ("grpc.enable_retries", 1)]
