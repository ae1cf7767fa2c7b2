"""Support reads: a user's history as the server's own store holds it (AdminService)."""

from __future__ import annotations

from dataclasses import dataclass

from service.domain.errors import FieldViolation, InvalidRequest
from service.domain.events import KeptEvent, kept_events
from service.domain.validation import check_user_id
from service.usecases.store_calls import StoreCalls
from storage.repository import AccountRepository, HistoryEntry

# How many entries a history answer holds: 0 asks for the default; more than the maximum
# is refused.
DEFAULT_HISTORY_ENTRIES = 1000
MAX_HISTORY_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class UserHistory:
    # The user's state version, at least that of every entry below.
    version: int
    # The newest entries, oldest first, at most the number asked for.
    entries: list[HistoryEntry]
    # How many entries the user has in all.
    total_entries: int
    # The kept events of the user's subscriptions with their effect in the current fold.
    subscription_events: list[KeptEvent]


class SupportService:
    def __init__(self, repository: AccountRepository, store: StoreCalls) -> None:
        self._repository = repository
        self._store = store

    async def history(self, user_id: str, max_entries: int = 0) -> UserHistory:
        violations: list[FieldViolation] = []
        check_user_id(user_id, "user_id", violations)
        if not 0 <= max_entries <= MAX_HISTORY_ENTRIES:
            violations.append(FieldViolation("max_entries", f"must be 0 to {MAX_HISTORY_ENTRIES}"))
        if violations:
            raise InvalidRequest(violations)
        # Within the RPC's time alone: a long history may take longer than a store call
        # of the hot path is allowed.
        version, entries, kept = await self._store.call("read", None, self._read, user_id)
        limit = max_entries or DEFAULT_HISTORY_ENTRIES
        return UserHistory(version, entries[-limit:], len(entries), kept)

    def _read(self, user_id: str) -> tuple[int, list[HistoryEntry], list[KeptEvent]]:
        """The history, then the state: read in this order, the version is at least that
        of every entry returned even when a write lands in between."""
        entries = self._repository.history(user_id)
        account = self._repository.load(user_id).account
        return account.version, entries, kept_events(account)
