"""Dead letters: store notifications that could not become events, kept with their reason
(docs/INGESTION.md). One per delivery (source, the store's delivery id); a redelivery of
the same notification counts an attempt instead of a new letter. Listed and replayed by
`entitlements dead-letters`; a replay that records the event resolves the letter.

Backends: memory (a dict, per process: storage/memory/dead_letters.py), SQLite (the
`dead_letters` table of migration 0005, same database file as the accounts:
storage/sqlite/dead_letters.py) and Spanner (the `DeadLetters` table:
storage/spanner/dead_letters.py), chosen by the storage URL like the account repository
(storage.urls.open_dead_letters). This module holds what they share: the letter and the
store's contract."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class DeadLetter:
    source: str  # "app_store", "stripe", "google_play"
    delivery_id: str  # notificationUUID, Stripe event id, Pub/Sub messageId
    payload: str  # the verified, decoded notification (JSON)
    reason: str  # service.domain.ingestion.DeadLetterReason
    detail: str
    received_at: datetime
    attempts: int = 1
    resolved_at: datetime | None = None


class DeadLetterStore(Protocol):
    def keep(self, letter: DeadLetter) -> None:
        """Stores the letter, or counts another attempt of a stored one (its reason and
        payload updated; a resolved letter opens again)."""

    def list(self, *, include_resolved: bool = False, limit: int = 100) -> list[DeadLetter]:
        """The letters, oldest first (open ones only unless include_resolved)."""

    def get(self, source: str, delivery_id: str) -> DeadLetter | None: ...

    def resolve(self, source: str, delivery_id: str, at: datetime) -> bool:
        """Marks the letter resolved; False when there is no open letter of that id."""

    def open_count(self) -> int: ...

    def close(self) -> None: ...
