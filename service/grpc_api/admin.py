"""The AdminService servicer: support tooling reading what the server reads.

`entitlements history` calls it instead of opening a store of its own, so the answer
comes from the store the server is configured with (SQLite, the Spanner emulator or
production Spanner), never from a default file beside the command. The RPC guard around
each method authenticates (admin only, see service.grpc_api.auth.policy), sets the
deadline budget, maps errors and writes the audit record.
"""

from __future__ import annotations

from typing import Any

import grpc

from entitlements.v1 import admin_service_pb2, admin_service_pb2_grpc
from service.grpc_api import convert
from service.usecases.support import SupportService


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, support: SupportService) -> None:
        self._support = support

    async def GetUserHistory(
        self,
        request: admin_service_pb2.GetUserHistoryRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> admin_service_pb2.GetUserHistoryResponse:
        history = await self._support.history(request.user_id, request.max_entries)
        return admin_service_pb2.GetUserHistoryResponse(
            user_id=request.user_id,
            version=history.version,
            entries=[convert.history_entry_to_proto(entry) for entry in history.entries],
            total_entries=history.total_entries,
            subscription_events=[
                convert.event_effect_to_proto(kept) for kept in history.subscription_events
            ],
        )
