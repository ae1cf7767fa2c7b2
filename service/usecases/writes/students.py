"""RecordStudentVerification and RevokeStudentVerification: a student status verified
by a provider, until a date; idempotent on the request id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from service.domain.account import AccountState
from service.domain.errors import FieldViolation, InvalidRequest, raise_if_invalid
from service.domain.households import revoke_student, verify_student
from service.domain.validation import check_id, check_user_id
from service.usecases.tokens import issue_token
from service.usecases.writes.core import WriteCore, fingerprint
from storage.repository import Applied, HistoryDraft, IdempotencyKey, Mutation


@dataclass(frozen=True, slots=True)
class RecordStudentVerification:
    request_id: str
    user_id: str
    # None: not set by the caller (refused).
    verified_until: datetime | None
    provider_reference: str

    def validate(self, now: datetime) -> datetime:
        """Raises InvalidRequest naming every bad field; the end of the verification."""
        violations: list[FieldViolation] = []
        check_id(self.request_id, "request_id", violations)
        check_user_id(self.user_id, "user_id", violations)
        check_id(self.provider_reference, "provider_reference", violations)
        if self.verified_until is None:
            violations.append(FieldViolation("verified_until", "must be set"))
        elif self.verified_until <= now:
            violations.append(FieldViolation("verified_until", "must be in the future"))
        if violations or self.verified_until is None:
            raise InvalidRequest(violations)
        return self.verified_until


@dataclass(frozen=True, slots=True)
class RevokeStudentVerification:
    request_id: str
    user_id: str

    def validate(self) -> None:
        violations: list[FieldViolation] = []
        check_id(self.request_id, "request_id", violations)
        check_user_id(self.user_id, "user_id", violations)
        raise_if_invalid(violations)


@dataclass(frozen=True, slots=True)
class StudentAnswer:
    verified_until: datetime | None
    consistency_token: str


class StudentVerifications:
    def __init__(self, core: WriteCore) -> None:
        self._core = core

    async def record(self, command: RecordStudentVerification) -> StudentAnswer:
        now = self._core.clock()
        until = command.validate(now)
        reference = command.provider_reference

        def mutate(account: AccountState) -> Mutation:
            updated = verify_student(account, until)
            if updated == account:
                return Mutation.unchanged({})
            summary = f"student verified until {until.isoformat()} ({reference})"
            return Mutation(
                updated, {}, (HistoryDraft("student_verification", reference, now, summary),)
            )

        key = IdempotencyKey("student_verify", command.request_id, fingerprint(until, reference))
        applied = await self._core.apply(
            "record_student_verification", command.user_id, key, mutate, now
        )
        return _answer(command.user_id, applied)

    async def revoke(self, command: RevokeStudentVerification) -> StudentAnswer:
        command.validate()
        now = self._core.clock()
        user_id = command.user_id

        def mutate(account: AccountState) -> Mutation:
            updated = revoke_student(account)
            if updated == account:
                return Mutation.unchanged({})
            summary = "student verification revoked"
            return Mutation(
                updated, {}, (HistoryDraft("student_revocation", user_id, now, summary),)
            )

        key = IdempotencyKey("student_revoke", command.request_id, fingerprint(user_id))
        applied = await self._core.apply("revoke_student_verification", user_id, key, mutate, now)
        return _answer(user_id, applied)


def _answer(user_id: str, applied: Applied) -> StudentAnswer:
    return StudentAnswer(
        applied.state.student_verified_until, issue_token(user_id, applied.version)
    )
