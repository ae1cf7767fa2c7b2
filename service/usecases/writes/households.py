"""CreateHousehold, AddHouseholdMember and RemoveHouseholdMember: a manager's household
and its members, each write idempotent on the request id. A membership change touches
two users (the manager's roster, the member's membership): two transactions, ordered so
that a failure between them is completed (or undone) by a retry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.domain.account import AccountState
from service.domain.errors import (
    FieldViolation,
    IdempotencyConflict,
    PreconditionFailed,
    PreconditionReason,
    raise_if_invalid,
)
from service.domain.households import (
    create_household,
    join_household,
    leave_household,
    release_seat,
    reserve_seat,
)
from service.domain.validation import check_id, check_user_id
from service.usecases.tokens import issue_token
from service.usecases.writes.core import WriteCore, fingerprint
from storage.repository import HistoryDraft, IdempotencyKey, Mutation


@dataclass(frozen=True, slots=True)
class CreateHousehold:
    request_id: str
    manager_user_id: str

    def validate(self) -> None:
        violations: list[FieldViolation] = []
        check_id(self.request_id, "request_id", violations)
        check_user_id(self.manager_user_id, "manager_user_id", violations)
        raise_if_invalid(violations)


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """AddHouseholdMember's and RemoveHouseholdMember's request."""

    request_id: str
    manager_user_id: str
    household_id: str
    member_user_id: str

    def validate(self) -> None:
        violations: list[FieldViolation] = []
        check_id(self.request_id, "request_id", violations)
        check_user_id(self.manager_user_id, "manager_user_id", violations)
        check_id(self.household_id, "household_id", violations)
        check_user_id(self.member_user_id, "member_user_id", violations)
        if self.member_user_id and self.member_user_id == self.manager_user_id:
            violations.append(FieldViolation("member_user_id", "the manager cannot be a member"))
        raise_if_invalid(violations)

    def digest(self) -> str:
        return fingerprint(self.manager_user_id, self.household_id, self.member_user_id)


class AddHouseholdMember(MembershipChange):
    __slots__ = ()


class RemoveHouseholdMember(MembershipChange):
    __slots__ = ()


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
class HouseholdReply:
    """What CreateHousehold's key keeps: the plan the household was created on."""

    plan_id: str
    household_size: int

    def stored(self) -> dict[str, Any]:
        return {"plan_id": self.plan_id, "household_size": self.household_size}

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> HouseholdReply:
        return cls(str(stored["plan_id"]), int(stored["household_size"]))


@dataclass(frozen=True, slots=True)
class JoinReply:
    """What the member's join keeps: nothing when it joined (or had), else the refusal,
    so that a retry of the request is refused the same way."""

    refused: PreconditionFailed | None = None

    def stored(self) -> dict[str, str]:
        if self.refused is None:
            return {}
        return {
            "refused": self.refused.reason.name,
            "subject": self.refused.subject,
            "description": self.refused.description,
        }

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> JoinReply:
        refused = stored.get("refused")
        if refused is None:
            return cls()
        return cls(
            PreconditionFailed(
                PreconditionReason[str(refused)],
                str(stored["subject"]),
                str(stored["description"]),
            )
        )


class Households:
    def __init__(self, core: WriteCore) -> None:
        self._core = core

    async def create(self, command: CreateHousehold) -> HouseholdAnswer:
        command.validate()
        catalog, now = self._core.catalog, self._core.clock()
        manager = command.manager_user_id
        # Derived from the request, so that a retried request names the same household.
        household_id = "household-" + fingerprint(manager, command.request_id)[:20]

        def mutate(account: AccountState) -> Mutation:
            updated, plan = create_household(account, catalog, household_id, now)
            reply = HouseholdReply(plan.id, plan.household_size).stored()
            if updated == account:
                return Mutation.unchanged(reply)
            summary = f"created household {household_id} on {plan.id} ({plan.household_size})"
            return Mutation(
                state=updated,
                response=reply,
                history=(HistoryDraft("household", household_id, now, summary),),
            )

        key = IdempotencyKey("household_create", command.request_id, fingerprint(manager))
        applied = await self._core.apply("create_household", manager, key, mutate, now)
        reply = HouseholdReply.from_stored(applied.response)
        return HouseholdAnswer(
            household_id,
            reply.plan_id,
            reply.household_size,
            issue_token(manager, applied.version),
        )

    async def add_member(self, command: AddHouseholdMember) -> MembershipAnswer:
        """Two transactions, each idempotent on request_id: the seat on the manager's
        roster (size limit), then the member's membership (one household per user, the
        join cooldown); a refused membership releases the seat.

        Between the two, a failure (UNAVAILABLE, a deadline) leaves a seat without a
        member: a retry with the same request_id replays the seat and completes (or
        refuses and releases) the membership; a manager who gives up frees it with
        RemoveHouseholdMember. A request id the member's account used for another add
        (IdempotencyConflict, ALREADY_EXISTS) releases the seat too."""
        command.validate()
        catalog, now = self._core.catalog, self._core.clock()
        manager, member = command.manager_user_id, command.member_user_id
        household_id, request_id, digest = (
            command.household_id,
            command.request_id,
            command.digest(),
        )
        summary = f"{member} joined household {household_id}"
        operation = "add_household_member"

        def seat(account: AccountState) -> Mutation:
            updated = reserve_seat(account, catalog, household_id, member, now)
            if updated == account:
                return Mutation.unchanged({})
            return Mutation(
                updated, {}, (HistoryDraft("household_seat", household_id, now, summary),)
            )

        def join(account: AccountState) -> Mutation:
            try:
                updated = join_household(
                    account, household_id, manager, now, catalog.household_join_cooldown_days
                )
            except PreconditionFailed as refused:
                # Kept with the key: a retry of this request is refused the same way, so
                # the seat released below is never left behind by a later success.
                return Mutation.unchanged(JoinReply(refused).stored())
            if updated == account:
                return Mutation.unchanged(JoinReply().stored())
            return Mutation(
                updated,
                JoinReply().stored(),
                (HistoryDraft("household_join", household_id, now, summary),),
            )

        def undo(account: AccountState) -> Mutation:
            updated = release_seat(account, household_id, member, now, undo=True)
            if updated == account:
                return Mutation.unchanged({})
            note = f"seat of {member} released: the membership was refused"
            return Mutation(updated, {}, (HistoryDraft("household_seat", household_id, now, note),))

        async def release() -> None:
            unseat_key = IdempotencyKey("household_unseat", request_id, digest)
            await self._core.apply(operation, manager, unseat_key, undo, now)

        seat_key = IdempotencyKey("household_seat", request_id, digest)
        seated = await self._core.apply(operation, manager, seat_key, seat, now)
        join_key = IdempotencyKey("household_join", request_id, digest)
        try:
            joined = await self._core.apply(operation, member, join_key, join, now)
        except IdempotencyConflict:
            # The member's account used this request id for another add (another
            # household): this request can never join, so its seat must not stay behind.
            await release()
            raise
        refused = JoinReply.from_stored(joined.response).refused
        if refused is not None:
            await release()
            raise refused
        return MembershipAnswer(
            household_id,
            issue_token(member, joined.version),
            issue_token(manager, seated.version),
        )

    async def remove_member(self, command: RemoveHouseholdMember) -> MembershipAnswer:
        """Two transactions, each idempotent on request_id: the member's membership ends
        (access goes first), then the seat on the manager's roster."""
        command.validate()
        now = self._core.clock()
        manager, member = command.manager_user_id, command.member_user_id
        household_id, request_id, digest = (
            command.household_id,
            command.request_id,
            command.digest(),
        )
        summary = f"{member} left household {household_id}"
        operation = "remove_household_member"

        def unseat(account: AccountState) -> Mutation:
            updated = release_seat(account, household_id, member, now)
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
        managed = (await self._core.load(operation, manager)).account
        release_seat(managed, household_id, member, now)
        leave_key = IdempotencyKey("household_leave", request_id, digest)
        left = await self._core.apply(operation, member, leave_key, leave, now)
        release_key = IdempotencyKey("household_release", request_id, digest)
        released = await self._core.apply(operation, manager, release_key, unseat, now)
        return MembershipAnswer(
            household_id,
            issue_token(member, left.version),
            issue_token(manager, released.version),
        )
