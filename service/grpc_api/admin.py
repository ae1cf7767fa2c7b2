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
from service.domain.errors import FieldViolation, InvalidRequest
from service.domain.validation import check_user_id
from service.grpc_api import convert
from service.usecases.deadlines import rpc_remaining
from service.usecases.store_calls import StoreCalls
from storage.repository import AccountRepository, HistoryEntry

# GetUserHistoryRequest.max_entries: 0 means the default; more than the maximum is refused.
DEFAULT_HISTORY_ENTRIES = 1000
MAX_HISTORY_ENTRIES = 10_000


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, repository: AccountRepository, store: StoreCalls) -> None:
        self._repository = repository
        self._store = store

    async def GetUserHistory(
        self,
        request: admin_service_pb2.GetUserHistoryRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> admin_service_pb2.GetUserHistoryResponse:
        violations: list[FieldViolation] = []
        check_user_id(request.user_id, "user_id", violations)
        if not 0 <= request.max_entries <= MAX_HISTORY_ENTRIES:
            violations.append(FieldViolation("max_entries", f"must be 0 to {MAX_HISTORY_ENTRIES}"))
        if violations:
            raise InvalidRequest(violations)
        # Blocking store calls: in a store thread, within the RPC's budget (like a write).
        version, entries = await self._store.run(rpc_remaining(), self._read, request.user_id)
        limit = request.max_entries or DEFAULT_HISTORY_ENTRIES
        return admin_service_pb2.GetUserHistoryResponse(
            user_id=request.user_id,
            version=version,
            entries=[convert.history_entry_to_proto(entry) for entry in entries[-limit:]],
            total_entries=len(entries),
        )

    def _read(self, user_id: str) -> tuple[int, list[HistoryEntry]]:
        """The history, then the state's version: read in this order, the version is at
        least that of every entry returned even when a write lands in between."""
        entries = self._repository.history(user_id)
        version = self._repository.load(user_id).account.version
        return version, entries
