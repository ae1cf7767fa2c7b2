"""What every write use case shares: one idempotent transaction through the repository
(through the store hop, service.usecases.store_calls), the cache entry dropped before
the write returns, and the digest that tells a retry from a reused id."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from service.domain.account import UserState
from service.domain.catalog import Catalog
from service.usecases.cache import UserStateCache
from service.usecases.clock import Clock, utc_now
from service.usecases.store_calls import StoreCalls
from storage.repository import AccountMutation, AccountRepository, Applied, IdempotencyKey


def fingerprint(*parts: Any) -> str:
    """A digest of a request's content, to tell a retry from a reused id. Kept with the
    request's key in the store: what it digests, and how, must never change."""
    canonical = json.dumps(parts, sort_keys=True, default=_jsonable)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "value"):  # enums
        return value.value
    raise TypeError(f"cannot fingerprint {type(value).__name__}")


class WriteCore:
    """The catalog, clock and store of the write use cases, and their two store calls."""

    def __init__(
        self,
        catalog: Catalog,
        repository: AccountRepository,
        cache: UserStateCache,
        clock: Clock = utc_now,
        write_timeout_seconds: float = 2.0,
        store: StoreCalls | None = None,
    ) -> None:
        self.catalog = catalog
        self.clock = clock
        self._repository = repository
        self._cache = cache
        self._write_timeout = write_timeout_seconds
        self._store = store or StoreCalls(threads=4)

    async def apply(
        self,
        operation: str,
        user_id: str,
        key: IdempotencyKey,
        mutate: AccountMutation,
        now: datetime,
    ) -> Applied:
        """One idempotent transaction of the user's state (observed as `operation`)."""
        try:
            return await self._store.call(
                operation, self._write_timeout, self._repository.apply, user_id, key, mutate, now
            )
        finally:
            # Before the write returns, this process must not serve the older state.
            self._cache.invalidate(user_id)

    async def load(self, operation: str, user_id: str) -> UserState:
        """The user's state as stored, read outside any transaction."""
        return await self._store.call(
            operation, self._write_timeout, self._repository.load, user_id
        )
