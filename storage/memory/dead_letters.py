"""Dead letters in memory, per process: for tests and `memory://` (storage.dead_letters holds
the letter and the store's contract)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime

from storage.dead_letters import DeadLetter


class MemoryDeadLetters:
    def __init__(self) -> None:
        self._letters: dict[tuple[str, str], DeadLetter] = {}
        self._lock = threading.Lock()

    def keep(self, letter: DeadLetter) -> None:
        with self._lock:
            key = (letter.source, letter.delivery_id)
            known = self._letters.get(key)
            if known is not None:
                letter = replace(letter, received_at=known.received_at, attempts=known.attempts + 1)
            self._letters[key] = replace(letter, resolved_at=None)

    def list(self, *, include_resolved: bool = False, limit: int = 100) -> list[DeadLetter]:
        with self._lock:
            letters = sorted(self._letters.values(), key=lambda x: x.received_at)
        return [x for x in letters if include_resolved or x.resolved_at is None][:limit]

    def get(self, source: str, delivery_id: str) -> DeadLetter | None:
        with self._lock:
            return self._letters.get((source, delivery_id))

    def resolve(self, source: str, delivery_id: str, at: datetime) -> bool:
        with self._lock:
            letter = self._letters.get((source, delivery_id))
            if letter is None or letter.resolved_at is not None:
                return False
            self._letters[(source, delivery_id)] = replace(letter, resolved_at=at)
            return True

    def open_count(self) -> int:
        with self._lock:
            return sum(1 for x in self._letters.values() if x.resolved_at is None)

    def close(self) -> None:
        pass
