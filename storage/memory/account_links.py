"""Store accounts linked to users, in this process (storage.account_links has the
contract)."""

from __future__ import annotations

import threading
from datetime import datetime


class MemoryAccountLinks:
    def __init__(self) -> None:
        self._links: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def link(self, store: str, account_id: str, user_id: str, at: datetime) -> None:
        with self._lock:
            self._links[(store, account_id)] = user_id

    def user_for(self, store: str, account_id: str) -> str | None:
        with self._lock:
            return self._links.get((store, account_id))

    def close(self) -> None:
        pass
