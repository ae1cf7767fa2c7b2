"""RecordSubscriptionEvent: a store's event kept with the user's subscription events and
its subscription re-folded (service.domain.events), idempotent on the event id."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.domain.account import AccountState, Subscription
from service.domain.catalog import Catalog
from service.domain.errors import FieldViolation, InvalidRequest, raise_if_invalid
from service.domain.events import (
    EventOutcome,
    EventType,
    SubscriptionEvent,
    apply_event,
    validate_event,
)
from service.domain.validation import check_user_id
from service.usecases.tokens import issue_token
from service.usecases.writes.core import WriteCore, fingerprint
from storage.repository import HistoryDraft, IdempotencyKey, Mutation


@dataclass(frozen=True, slots=True)
class RecordSubscriptionEvent:
    user_id: str
    event: SubscriptionEvent

    def validate(self, catalog: Catalog, now: datetime) -> tuple[EventType, datetime]:
        """Raises InvalidRequest naming every bad field (the user first, then the event);
        the event's type and time, known to be set."""
        violations: list[FieldViolation] = []
        check_user_id(self.user_id, "user_id", violations)
        raise_if_invalid(violations)
        validate_event(self.event, catalog, now)  # an unset type or time included
        if self.event.type is None or self.event.occurred_at is None:
            raise InvalidRequest([FieldViolation("event_type", "must be a known event type")])
        return self.event.type, self.event.occurred_at


@dataclass(frozen=True, slots=True)
class EventAnswer:
    # DUPLICATE when the event id was recorded before (the first answer, replayed).
    outcome: EventOutcome
    # None while the subscription is not known yet (its events PENDING).
    subscription: Subscription | None
    consistency_token: str


@dataclass(frozen=True, slots=True)
class EventReply:
    """What the event's key keeps, so that a redelivery is answered as the first was."""

    outcome: EventOutcome

    def stored(self) -> dict[str, str]:
        return {"outcome": self.outcome.value}

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> EventReply:
        return cls(EventOutcome(stored["outcome"]))


class SubscriptionEvents:
    OPERATION = "record_event"

    def __init__(self, core: WriteCore) -> None:
        self._core = core

    async def record(self, command: RecordSubscriptionEvent) -> EventAnswer:
        catalog, now = self._core.catalog, self._core.clock()
        event = command.event
        event_type, occurred_at = command.validate(catalog, now)

        def mutate(account: AccountState) -> Mutation:
            # Every accepted event is kept and its subscription re-folded (a new version
            # even when the subscription did not move: the event set did).
            result = apply_event(account, event, catalog, now)
            reply = EventReply(result.outcome).stored()
            if result.account == account:
                # A redelivery under another id adds nothing: no version, no history.
                return Mutation.unchanged(reply)
            sub = result.subscription
            summary = f"{event_type.name} on {event.subscription_id}: {result.outcome.value}"
            if sub is None:
                summary += f" ({result.effect.why})"
            else:
                summary += (
                    f" ({sub.store.value}); now {sub.status.value} "
                    f"on {sub.plan_id} until {sub.current_period_end.isoformat()}"
                )
            return Mutation(
                state=result.account,
                response=reply,
                history=(HistoryDraft("subscription_event", event.event_id, occurred_at, summary),),
            )

        key = IdempotencyKey("event", event.event_id, fingerprint(event))
        applied = await self._core.apply(self.OPERATION, command.user_id, key, mutate, now)
        outcome = (
            EventOutcome.DUPLICATE
            if applied.replayed
            else EventReply.from_stored(applied.response).outcome
        )
        subscription = next(
            (s for s in applied.state.subscriptions if s.subscription_id == event.subscription_id),
            None,
        )
        return EventAnswer(outcome, subscription, issue_token(command.user_id, applied.version))
