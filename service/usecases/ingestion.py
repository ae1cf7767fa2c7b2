"""Store notifications, verified and decoded by an adapter (service/ingestion), become
subscription events through RecordSubscriptionEvent's use case, or dead letters
(docs/INGESTION.md). Every verdict says whether the notification is durable, so the
adapter answers the store 2xx only then (the stores redeliver anything else):

- RECORDED / DUPLICATE: the event is stored (or was, under the same store id);
- IGNORED: nothing to record (a TEST notification...);
- DEAD_LETTER: unmappable, kept with its reason (storage.dead_letters);
- CONFLICT: the store id was recorded before with another content: refused, never
  durable (a forgery or a bug; the stores never change a notification they resend);
- RETRY: a transient fault (the store is unavailable) or "not yet" (an event of a
  subscription or period not recorded yet: the redelivery after the missing one applies).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping as MappingType
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from service.domain.catalog import Catalog
from service.domain.errors import (
    DeadlineExceeded,
    IdempotencyConflict,
    InvalidRequest,
    PreconditionFailed,
    StoreError,
)
from service.domain.events import EventOutcome
from service.domain.ingestion import (
    DeadLetterReason,
    Ignored,
    Mapped,
    Mapper,
    Unmappable,
)
from service.domain.store_accounts import store_account
from service.usecases.clock import Clock, utc_now
from service.usecases.store_calls import StoreCalls
from service.usecases.writes import RecordSubscriptionEvent, WriteService
from storage.account_links import AccountLinks
from storage.dead_letters import DeadLetter, DeadLetterStore

__all__ = ["IngestResult", "IngestionObserver", "IngestionService", "Mapper", "Verdict"]


class Verdict(enum.Enum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    DEAD_LETTER = "dead_letter"
    CONFLICT = "conflict"
    RETRY = "retry"

    @property
    def durable(self) -> bool:
        return self not in (Verdict.CONFLICT, Verdict.RETRY)


@dataclass(frozen=True, slots=True)
class IngestResult:
    verdict: Verdict
    detail: str = ""
    user_id: str | None = None


class IngestionObserver(Protocol):
    def ingested(self, source: str, verdict: Verdict, lag_seconds: float | None) -> None:
        """One notification of `source` ended with `verdict`; `lag_seconds`: from the
        store's sending to its event being durable (None: unknown or not recorded)."""

    def dead_letter(self, source: str, reason: str) -> None: ...


class IngestionService:
    def __init__(
        self,
        catalog: Catalog,
        writes: WriteService,
        store_calls: StoreCalls,
        dead_letters: DeadLetterStore,
        clock: Clock = utc_now,
        write_timeout_seconds: float = 2.0,
        observer: IngestionObserver | None = None,
        account_links: AccountLinks | None = None,
    ) -> None:
        self.catalog = catalog
        self._writes = writes
        self._store_calls = store_calls
        self.dead_letters = dead_letters
        self._clock = clock
        self._timeout = write_timeout_seconds
        self.observer = observer
        self.account_links = account_links
        # Verdicts per (source, verdict), for tests and the metrics.
        self.counts: dict[tuple[str, Verdict], int] = {}

    def count(self, source: str, verdict: Verdict) -> int:
        return self.counts.get((source, verdict), 0)

    async def ingest(
        self,
        source: str,
        delivery_id: str,
        notification: MappingType[str, Any],
        mapper: Mapper,
        sent_at: datetime | None = None,
    ) -> IngestResult:
        """Maps a verified notification and makes it durable (see the module doc)."""
        result = await self._ingest(source, delivery_id, notification, mapper)
        self.counts[(source, result.verdict)] = self.counts.get((source, result.verdict), 0) + 1
        if self.observer is not None:
            lag = None
            if sent_at is not None and result.verdict is Verdict.RECORDED:
                lag = max(0.0, (self._clock() - sent_at).total_seconds())
            self.observer.ingested(source, result.verdict, lag)
        return result

    async def _ingest(
        self,
        source: str,
        delivery_id: str,
        notification: MappingType[str, Any],
        mapper: Mapper,
    ) -> IngestResult:
        mapping = mapper(notification, self.catalog)
        if isinstance(mapping, Unmappable) and mapping.reason is DeadLetterReason.NO_USER:
            try:
                linked = await self._linked_user(source, notification)
            except (StoreError, DeadlineExceeded) as error:
                return IngestResult(Verdict.RETRY, f"account links: {error}")
            if linked is not None:
                mapping = mapper(notification, self.catalog, linked)
        if isinstance(mapping, Ignored):
            return IngestResult(Verdict.IGNORED, mapping.why)
        if isinstance(mapping, Unmappable):
            return await self._dead_letter(source, delivery_id, notification, mapping)
        return await self._record(source, delivery_id, notification, mapping)

    async def _linked_user(self, source: str, notification: MappingType[str, Any]) -> str | None:
        """The user the notification's store account is linked to, if any."""
        account = store_account(source, notification)
        if self.account_links is None or account is None:
            return None
        return await self._store_calls.call(
            "user_for", self._timeout, self.account_links.user_for, source, account
        )

    async def _record(
        self,
        source: str,
        delivery_id: str,
        notification: MappingType[str, Any],
        mapped: Mapped,
    ) -> IngestResult:
        try:
            answer = await self._writes.events.record(
                RecordSubscriptionEvent(mapped.user_id, mapped.event)
            )
            for event in mapped.then:
                await self._writes.events.record(RecordSubscriptionEvent(mapped.user_id, event))
        except InvalidRequest as error:
            detail = "; ".join(f"{v.field}: {v.description}" for v in error.violations)
            letter = Unmappable(DeadLetterReason.INVALID_EVENT, detail)
            return await self._dead_letter(source, delivery_id, notification, letter)
        except PreconditionFailed as error:
            return IngestResult(Verdict.RETRY, f"not yet: {error}", mapped.user_id)
        except IdempotencyConflict:
            return IngestResult(
                Verdict.CONFLICT,
                f"{delivery_id} was recorded before with another content",
                mapped.user_id,
            )
        except (StoreError, DeadlineExceeded) as error:
            return IngestResult(Verdict.RETRY, f"store: {error}", mapped.user_id)
        verdict = (
            Verdict.DUPLICATE if answer.outcome is EventOutcome.DUPLICATE else Verdict.RECORDED
        )
        return IngestResult(verdict, answer.outcome.name.lower(), mapped.user_id)

    async def _dead_letter(
        self,
        source: str,
        delivery_id: str,
        notification: MappingType[str, Any],
        unmappable: Unmappable,
    ) -> IngestResult:
        letter = DeadLetter(
            source=source,
            delivery_id=delivery_id,
            payload=json.dumps(notification, sort_keys=True, separators=(",", ":")),
            reason=unmappable.reason.value,
            detail=unmappable.detail,
            received_at=self._clock(),
        )
        try:
            await self._store_calls.call("keep", self._timeout, self.dead_letters.keep, letter)
        except (StoreError, DeadlineExceeded) as error:
            return IngestResult(Verdict.RETRY, f"dead letter store: {error}")
        if self.observer is not None:
            self.observer.dead_letter(source, unmappable.reason.value)
        return IngestResult(Verdict.DEAD_LETTER, f"{unmappable.reason.value}: {unmappable.detail}")

    async def replay(self, letter: DeadLetter, mapper: Mapper) -> IngestResult:
        """Maps a dead letter again (after a fix: a catalog with its product, the user's
        mapping...); when it becomes durable as an event (or nothing to record), the
        letter is resolved. A letter still unmappable stays, with the new reason."""
        notification = json.loads(letter.payload)
        result = await self.ingest(letter.source, letter.delivery_id, notification, mapper)
        if result.verdict in (Verdict.RECORDED, Verdict.DUPLICATE, Verdict.IGNORED):
            await self._store_calls.call(
                "resolve",
                self._timeout,
                self.dead_letters.resolve,
                letter.source,
                letter.delivery_id,
                self._clock(),
            )
        return result
