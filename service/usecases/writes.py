"""The write use cases: validate, run one idempotent transaction through the repository,
drop this process's cache entry, and return a consistency token for later reads."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from service.domain.account import AccountState, Grant, Store, Subscription, UserState
from service.domain.catalog import Catalog
from service.domain.errors import FieldViolation, InvalidRequest
from service.domain.events import (
    EventOutcome,
    SubscriptionEvent,
    apply_event,
    validate_event,
)
from service.domain.grants import GrantRequest, new_grant, revoke_grant, validate_grant, with_grant
from service.domain.redemption import redeem_offer
from service.domain.rules import Platform
from service.domain.validation import check_id, check_market, check_user_id
from service.usecases.cache import UserStateCache
from service.usecases.clock import Clock, utc_now
from service.usecases.deadlines import StoreBudget, store_budget
from service.usecases.tokens import issue_token
from storage.deadline import DeadlineExceeded
from storage.repository import (
    AccountMutation,
    AccountRepository,
    Applied,
    HistoryDraft,
    IdempotencyKey,
    Mutation,
    StoreUnavailable,
)


class RecordOutcome(enum.Enum):
    """What recording a subscription event did (EventOutcome in the protos)."""

    # The event moved the subscription.
    APPLIED = enum.auto()
    # Older than what the subscription reflects: recorded, nothing moved.
    STALE = enum.auto()
    # Can never apply (after a revocation, a refund of a past period...): recorded.
    SUPERSEDED = enum.auto()
    # The event id was recorded before: the first answer, replayed.
    DUPLICATE = enum.auto()


_RECORD_OUTCOMES = {
    EventOutcome.APPLIED: RecordOutcome.APPLIED,
    EventOutcome.STALE: RecordOutcome.STALE,
    EventOutcome.SUPERSEDED: RecordOutcome.SUPERSEDED,
}


@dataclass(frozen=True, slots=True)
class EventAnswer:
    outcome: RecordOutcome
    subscription: Subscription
    consistency_token: str


# What each write keeps with its idempotency key, so that a retry is answered as the
# first request was (stored as a JSON object by the repository).


@dataclass(frozen=True, slots=True)
class EventReply:
    outcome: EventOutcome

    def stored(self) -> dict[str, str]:
        return {"outcome": self.outcome.value}

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> EventReply:
        return cls(EventOutcome(stored["outcome"]))


@dataclass(frozen=True, slots=True)
class GrantReply:
    grant_id: str

    def stored(self) -> dict[str, str]:
        return {"grant_id": self.grant_id}

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> GrantReply:
        return cls(str(stored["grant_id"]))


@dataclass(frozen=True, slots=True)
class RedeemReply:
    subscription_id: str

    def stored(self) -> dict[str, str]:
        return {"subscription_id": self.subscription_id}

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> RedeemReply:
        return cls(str(stored["subscription_id"]))


@dataclass(frozen=True, slots=True)
class GrantAnswer:
    grant: Grant
    consistency_token: str


@dataclass(frozen=True, slots=True)
class RedeemAnswer:
    subscription: Subscription
    consistency_token: str


def fingerprint(*parts: Any) -> str:
    """A digest of a request's content, to tell a retry from a reused id."""
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


def _raise_if(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidRequest(violations)


class WriteService:
    def __init__(
        self,
        catalog: Catalog,
        repository: AccountRepository,
        cache: UserStateCache,
        clock: Clock = utc_now,
        write_timeout_seconds: float = 2.0,
    ) -> None:
        self.catalog = catalog
        self._repository = repository
        self._cache = cache
        self._clock = clock
        self._write_timeout = write_timeout_seconds

    def record_event(self, user_id: str, event: SubscriptionEvent) -> EventAnswer:
        violations: list[FieldViolation] = []
        check_user_id(user_id, "user_id", violations)
        _raise_if(violations)
        now = self._clock()
        validate_event(event, self.catalog, now)
        assert event.type is not None and event.occurred_at is not None
        event_type, occurred_at = event.type, event.occurred_at

        def mutate(account: AccountState) -> Mutation:
            result = apply_event(account, event, self.catalog)
            reply = EventReply(result.outcome).stored()
            if result.outcome is not EventOutcome.APPLIED and result.account == account:
                # A STALE or SUPERSEDED event that adds no new fact (a redelivery under
                # another id, an event a revocation absorbed): no version, no history.
                return Mutation.unchanged(reply)
            sub = result.subscription
            summary = (
                f"{event_type.name} on {sub.subscription_id} "
                f"({sub.store.value}): {result.outcome.value}; now {sub.status.value} "
                f"on {sub.plan_id} until {sub.current_period_end.isoformat()}"
            )
            return Mutation(
                state=result.account,
                response=reply,
                history=(HistoryDraft("subscription_event", event.event_id, occurred_at, summary),),
            )

        key = IdempotencyKey("event", event.event_id, fingerprint(event))
        applied = self._apply(user_id, key, mutate, now)
        outcome = (
            RecordOutcome.DUPLICATE
            if applied.replayed
            else _RECORD_OUTCOMES[EventReply.from_stored(applied.response).outcome]
        )
        subscription = next(
            s for s in applied.state.subscriptions if s.subscription_id == event.subscription_id
        )
        return EventAnswer(outcome, subscription, issue_token(user_id, applied.version))

    def grant(self, request_id: str, user_id: str, request: GrantRequest) -> GrantAnswer:
        violations: list[FieldViolation] = []
        check_id(request_id, "request_id", violations)
        check_user_id(user_id, "user_id", violations)
        _raise_if(violations)
        now = self._clock()
        validate_grant(request, self.catalog, now)
        # Derived from the request, so that a retried request names the same grant.
        grant_id = "grant-" + fingerprint(user_id, request_id)[:20]
        grant = new_grant(grant_id, request, now)
        target = request.feature_id or f"plan {request.plan_id}"
        until = grant.expires_at.isoformat() if grant.expires_at else "no end"
        summary = f"{grant.kind.value} grant of {target} from {grant.starts_at.isoformat()}"
        summary += f" until {until}"

        def mutate(account: AccountState) -> Mutation:
            return Mutation(
                state=with_grant(account, grant),
                response=GrantReply(grant_id).stored(),
                history=(HistoryDraft("grant", grant_id, grant.starts_at, summary),),
            )

        # What the caller sent (an unset start stays unset): a retry of the same request
        # matches, whenever it arrives.
        key = IdempotencyKey("grant", request_id, fingerprint(request))
        applied = self._apply(user_id, key, mutate, now)
        return self._grant_answer(user_id, applied)

    def revoke(self, request_id: str, user_id: str, grant_id: str) -> GrantAnswer:
        violations: list[FieldViolation] = []
        check_id(request_id, "request_id", violations)
        check_user_id(user_id, "user_id", violations)
        check_id(grant_id, "grant_id", violations)
        _raise_if(violations)
        now = self._clock()

        def mutate(account: AccountState) -> Mutation:
            updated, revoked = revoke_grant(account, grant_id, now)
            if updated == account:
                # Revoking a revoked grant changes nothing: no version, no history; the
                # answer is the grant as revoked first, with the current version's token.
                return Mutation.unchanged(GrantReply(grant_id).stored())
            assert revoked.revoked_at is not None
            return Mutation(
                state=updated,
                response=GrantReply(grant_id).stored(),
                history=(
                    HistoryDraft(
                        "revoke",
                        grant_id,
                        revoked.revoked_at,
                        f"revoked {revoked.kind.value} grant {grant_id}",
                    ),
                ),
            )

        key = IdempotencyKey("revoke", request_id, fingerprint(grant_id))
        applied = self._apply(user_id, key, mutate, now)
        return self._grant_answer(user_id, applied)

    def redeem(
        self,
        request_id: str,
        user_id: str,
        offer_id: str,
        market: str,
        platform: Platform | None,
        store: Store | None,
        subscription_id: str,
    ) -> RedeemAnswer:
        violations: list[FieldViolation] = []
        check_id(request_id, "request_id", violations)
        check_user_id(user_id, "user_id", violations)
        if all(o.id != offer_id for o in self.catalog.offers):
            violations.append(FieldViolation("offer_id", f"unknown offer '{offer_id}'"))
        check_market(market, "market", violations)
        if platform is None:
            violations.append(FieldViolation("platform", "must be a known platform"))
        if store is None:
            violations.append(FieldViolation("store", "must be a known store"))
        check_id(subscription_id, "subscription_id", violations)
        _raise_if(violations)
        assert platform is not None and store is not None
        now = self._clock()
        # The household (the manager's subscriptions) is read before the transaction: it
        # only refines the current plan; the once-per-group facts are the user's own rows,
        # read inside the transaction.
        with self._budget():
            household = self._repository.load(user_id).household

        def mutate(account: AccountState) -> Mutation:
            updated, subscription = redeem_offer(
                UserState(account, household),
                self.catalog,
                offer_id,
                market,
                platform,
                store,
                subscription_id,
                now,
            )
            summary = (
                f"redeemed {offer_id} in {market} on {platform.value} via {store.value}: "
                f"{subscription.subscription_id} {subscription.status.value} until "
                f"{subscription.current_period_end.isoformat()}"
            )
            return Mutation(
                state=updated,
                response=RedeemReply(subscription_id).stored(),
                history=(HistoryDraft("redemption", offer_id, now, summary),),
            )

        key = IdempotencyKey(
            "redeem", request_id, fingerprint(offer_id, market, platform, store, subscription_id)
        )
        applied = self._apply(user_id, key, mutate, now)
        reply = RedeemReply.from_stored(applied.response)
        subscription = next(
            s for s in applied.state.subscriptions if s.subscription_id == reply.subscription_id
        )
        return RedeemAnswer(subscription, issue_token(user_id, applied.version))

    def _apply(
        self,
        user_id: str,
        key: IdempotencyKey,
        mutate: AccountMutation,
        now: datetime,
    ) -> Applied:
        try:
            with self._budget():
                return self._repository.apply(user_id, key, mutate, now)
        finally:
            # Before the write returns, this process must not serve the older state.
            self._cache.invalidate(user_id)

    @contextmanager
    def _budget(self) -> Iterator[None]:
        """A store call of a write gets min(write timeout, what the RPC has left). When
        the write timeout (not the RPC's deadline) ran out, the store is unavailable."""
        budget: StoreBudget | None = None
        try:
            with store_budget(self._write_timeout) as budget:
                yield
        except DeadlineExceeded as error:
            if budget is not None and not budget.bound_by_rpc:
                raise StoreUnavailable("the store did not answer in time") from error
            raise

    def _grant_answer(self, user_id: str, applied: Applied) -> GrantAnswer:
        grant_id = GrantReply.from_stored(applied.response).grant_id
        grant = next(g for g in applied.state.grants if g.grant_id == grant_id)
        return GrantAnswer(grant, issue_token(user_id, applied.version))
