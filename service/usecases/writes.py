"""The write use cases: validate, run one idempotent transaction through the repository,
drop this process's cache entry, and return a consistency token for later reads."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from service.domain.account import AccountState, Grant, Store, Subscription, UserState
from service.domain.catalog import Catalog
from service.domain.errors import (
    FieldViolation,
    IdempotencyConflict,
    InvalidRequest,
    PreconditionFailed,
    PreconditionReason,
)
from service.domain.events import (
    EventOutcome,
    SubscriptionEvent,
    apply_event,
    validate_event,
)
from service.domain.grants import GrantRequest, new_grant, revoke_grant, validate_grant, with_grant
from service.domain.households import (
    create_household,
    join_household,
    leave_household,
    release_seat,
    reserve_seat,
    revoke_student,
    verify_student,
)
from service.domain.redemption import redeem_offer
from service.domain.rules import Platform
from service.domain.validation import check_id, check_market, check_user_id
from service.usecases.cache import UserStateCache
from service.usecases.clock import Clock, utc_now
from service.usecases.store_calls import StoreCalls
from service.usecases.tokens import issue_token
from storage.repository import (
    AccountMutation,
    AccountRepository,
    Applied,
    HistoryDraft,
    IdempotencyKey,
    Mutation,
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


@dataclass(frozen=True, slots=True)
class HouseholdAnswer:
    household_id: str
    plan_id: str
    household_size: int
    consistency_token: str


@dataclass(frozen=True, slots=True)
class MembershipAnswer:
    household_id: str
    # The member's token: reads of the member with it see the change.
    consistency_token: str
    manager_consistency_token: str


@dataclass(frozen=True, slots=True)
class StudentAnswer:
    verified_until: datetime | None
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
        store: StoreCalls | None = None,
    ) -> None:
        self.catalog = catalog
        self._repository = repository
        self._cache = cache
        self._clock = clock
        self._write_timeout = write_timeout_seconds
        self._store = store or StoreCalls(threads=4)

    async def record_event(self, user_id: str, event: SubscriptionEvent) -> EventAnswer:
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
        applied = await self._apply("record_event", user_id, key, mutate, now)
        outcome = (
            RecordOutcome.DUPLICATE
            if applied.replayed
            else _RECORD_OUTCOMES[EventReply.from_stored(applied.response).outcome]
        )
        subscription = next(
            s for s in applied.state.subscriptions if s.subscription_id == event.subscription_id
        )
        return EventAnswer(outcome, subscription, issue_token(user_id, applied.version))

    async def grant(self, request_id: str, user_id: str, request: GrantRequest) -> GrantAnswer:
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
        applied = await self._apply("grant", user_id, key, mutate, now)
        return self._grant_answer(user_id, applied)

    async def revoke(self, request_id: str, user_id: str, grant_id: str) -> GrantAnswer:
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
        applied = await self._apply("revoke", user_id, key, mutate, now)
        return self._grant_answer(user_id, applied)

    async def redeem(
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
        household = (
            await self._store.call("redeem", self._write_timeout, self._repository.load, user_id)
        ).household

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
        applied = await self._apply("redeem", user_id, key, mutate, now)
        reply = RedeemReply.from_stored(applied.response)
        subscription = next(
            s for s in applied.state.subscriptions if s.subscription_id == reply.subscription_id
        )
        return RedeemAnswer(subscription, issue_token(user_id, applied.version))

    async def create_household(self, request_id: str, manager_user_id: str) -> HouseholdAnswer:
        violations: list[FieldViolation] = []
        check_id(request_id, "request_id", violations)
        check_user_id(manager_user_id, "manager_user_id", violations)
        _raise_if(violations)
        now = self._clock()
        # Derived from the request, so that a retried request names the same household.
        household_id = "household-" + fingerprint(manager_user_id, request_id)[:20]

        def mutate(account: AccountState) -> Mutation:
            updated, plan = create_household(account, self.catalog, household_id, now)
            reply = {"plan_id": plan.id, "household_size": plan.household_size}
            if updated == account:
                return Mutation.unchanged(reply)
            summary = f"created household {household_id} on {plan.id} ({plan.household_size})"
            return Mutation(
                state=updated,
                response=reply,
                history=(HistoryDraft("household", household_id, now, summary),),
            )

        key = IdempotencyKey("household_create", request_id, fingerprint(manager_user_id))
        applied = await self._apply("create_household", manager_user_id, key, mutate, now)
        return HouseholdAnswer(
            household_id,
            str(applied.response["plan_id"]),
            int(applied.response["household_size"]),
            issue_token(manager_user_id, applied.version),
        )

    def _membership_request(
        self, request_id: str, manager_user_id: str, household_id: str, member_user_id: str
    ) -> str:
        violations: list[FieldViolation] = []
        check_id(request_id, "request_id", violations)
        check_user_id(manager_user_id, "manager_user_id", violations)
        check_id(household_id, "household_id", violations)
        check_user_id(member_user_id, "member_user_id", violations)
        if member_user_id and member_user_id == manager_user_id:
            violations.append(FieldViolation("member_user_id", "the manager cannot be a member"))
        _raise_if(violations)
        return fingerprint(manager_user_id, household_id, member_user_id)

    async def add_household_member(
        self, request_id: str, manager_user_id: str, household_id: str, member_user_id: str
    ) -> MembershipAnswer:
        """Two transactions, each idempotent on request_id: the seat on the manager's
        roster (size limit), then the member's membership (one household per user, the
        join cooldown); a refused membership releases the seat.

        Between the two, a failure (UNAVAILABLE, a deadline) leaves a seat without a
        member: a retry with the same request_id replays the seat and completes (or
        refuses and releases) the membership; a manager who gives up frees it with
        RemoveHouseholdMember. A request id the member's account used for another add
        (IdempotencyConflict, ALREADY_EXISTS) releases the seat too."""
        digest = self._membership_request(request_id, manager_user_id, household_id, member_user_id)
        now = self._clock()
        summary = f"{member_user_id} joined household {household_id}"

        def seat(account: AccountState) -> Mutation:
            updated = reserve_seat(account, self.catalog, household_id, member_user_id, now)
            if updated == account:
                return Mutation.unchanged({})
            return Mutation(
                updated, {}, (HistoryDraft("household_seat", household_id, now, summary),)
            )

        def join(account: AccountState) -> Mutation:
            try:
                updated = join_household(
                    account,
                    household_id,
                    manager_user_id,
                    now,
                    self.catalog.household_join_cooldown_days,
                )
            except PreconditionFailed as refused:
                # Kept with the key: a retry of this request is refused the same way, so
                # the seat released below is never left behind by a later success.
                return Mutation.unchanged(
                    {
                        "refused": refused.reason.name,
                        "subject": refused.subject,
                        "description": refused.description,
                    }
                )
            if updated == account:
                return Mutation.unchanged({})
            return Mutation(
                updated, {}, (HistoryDraft("household_join", household_id, now, summary),)
            )

        def undo(account: AccountState) -> Mutation:
            updated = release_seat(account, household_id, member_user_id, now, undo=True)
            if updated == account:
                return Mutation.unchanged({})
            note = f"seat of {member_user_id} released: the membership was refused"
            return Mutation(updated, {}, (HistoryDraft("household_seat", household_id, now, note),))

        unseat_key = IdempotencyKey("household_unseat", request_id, digest)
        manager = await self._apply(
            "add_household_member",
            manager_user_id,
            IdempotencyKey("household_seat", request_id, digest),
            seat,
            now,
        )
        try:
            member = await self._apply(
                "add_household_member",
                member_user_id,
                IdempotencyKey("household_join", request_id, digest),
                join,
                now,
            )
        except IdempotencyConflict:
            # The member's account used this request id for another add (another
            # household): this request can never join, so its seat must not stay behind.
            await self._apply("add_household_member", manager_user_id, unseat_key, undo, now)
            raise
        refused = member.response.get("refused")
        if refused is not None:
            await self._apply("add_household_member", manager_user_id, unseat_key, undo, now)
            raise PreconditionFailed(
                PreconditionReason[str(refused)],
                str(member.response["subject"]),
                str(member.response["description"]),
            )
        return MembershipAnswer(
            household_id,
            issue_token(member_user_id, member.version),
            issue_token(manager_user_id, manager.version),
        )

    async def remove_household_member(
        self, request_id: str, manager_user_id: str, household_id: str, member_user_id: str
    ) -> MembershipAnswer:
        """Two transactions, each idempotent on request_id: the member's membership ends
        (access goes first), then the seat on the manager's roster."""
        digest = self._membership_request(request_id, manager_user_id, household_id, member_user_id)
        now = self._clock()
        summary = f"{member_user_id} left household {household_id}"

        def unseat(account: AccountState) -> Mutation:
            updated = release_seat(account, household_id, member_user_id, now)
            if updated == account:
                return Mutation.unchanged({})
            return Mutation(
                updated, {}, (HistoryDraft("household_seat", household_id, now, summary),)
            )

        def leave(account: AccountState) -> Mutation:
            updated = leave_household(account, household_id, now)
            if updated == account:
                return Mutation.unchanged({})
            return Mutation(
                updated, {}, (HistoryDraft("household_leave", household_id, now, summary),)
            )

        # The manager must manage the household (NOT_FOUND) before anything is written.
        managed = (
            await self._store.call(
                "remove_household_member",
                self._write_timeout,
                self._repository.load,
                manager_user_id,
            )
        ).account
        release_seat(managed, household_id, member_user_id, now)
        member = await self._apply(
            "remove_household_member",
            member_user_id,
            IdempotencyKey("household_leave", request_id, digest),
            leave,
            now,
        )
        manager = await self._apply(
            "remove_household_member",
            manager_user_id,
            IdempotencyKey("household_release", request_id, digest),
            unseat,
            now,
        )
        return MembershipAnswer(
            household_id,
            issue_token(member_user_id, member.version),
            issue_token(manager_user_id, manager.version),
        )

    async def record_student_verification(
        self,
        request_id: str,
        user_id: str,
        verified_until: datetime | None,
        provider_reference: str,
    ) -> StudentAnswer:
        violations: list[FieldViolation] = []
        check_id(request_id, "request_id", violations)
        check_user_id(user_id, "user_id", violations)
        check_id(provider_reference, "provider_reference", violations)
        now = self._clock()
        if verified_until is None:
            violations.append(FieldViolation("verified_until", "must be set"))
        elif verified_until <= now:
            violations.append(FieldViolation("verified_until", "must be in the future"))
        _raise_if(violations)
        assert verified_until is not None
        until = verified_until

        def mutate(account: AccountState) -> Mutation:
            updated = verify_student(account, until)
            if updated == account:
                return Mutation.unchanged({})
            summary = f"student verified until {until.isoformat()} ({provider_reference})"
            return Mutation(
                updated,
                {},
                (HistoryDraft("student_verification", provider_reference, now, summary),),
            )

        key = IdempotencyKey("student_verify", request_id, fingerprint(until, provider_reference))
        applied = await self._apply("record_student_verification", user_id, key, mutate, now)
        return StudentAnswer(
            applied.state.student_verified_until, issue_token(user_id, applied.version)
        )

    async def revoke_student_verification(self, request_id: str, user_id: str) -> StudentAnswer:
        violations: list[FieldViolation] = []
        check_id(request_id, "request_id", violations)
        check_user_id(user_id, "user_id", violations)
        _raise_if(violations)
        now = self._clock()

        def mutate(account: AccountState) -> Mutation:
            updated = revoke_student(account)
            if updated == account:
                return Mutation.unchanged({})
            return Mutation(
                updated,
                {},
                (HistoryDraft("student_revocation", user_id, now, "student verification revoked"),),
            )

        key = IdempotencyKey("student_revoke", request_id, fingerprint(user_id))
        applied = await self._apply("revoke_student_verification", user_id, key, mutate, now)
        return StudentAnswer(
            applied.state.student_verified_until, issue_token(user_id, applied.version)
        )

    async def _apply(
        self,
        operation: str,
        user_id: str,
        key: IdempotencyKey,
        mutate: AccountMutation,
        now: datetime,
    ) -> Applied:
        try:
            return await self._store.call(
                operation, self._write_timeout, self._repository.apply, user_id, key, mutate, now
            )
        finally:
            # Before the write returns, this process must not serve the older state.
            self._cache.invalidate(user_id)

    def _grant_answer(self, user_id: str, applied: Applied) -> GrantAnswer:
        grant_id = GrantReply.from_stored(applied.response).grant_id
        grant = next(g for g in applied.state.grants if g.grant_id == grant_id)
        return GrantAnswer(grant, issue_token(user_id, applied.version))
