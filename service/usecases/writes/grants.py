"""GrantEntitlement and RevokeEntitlement: promotional, support and partner grants,
idempotent on the request id."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.domain.account import AccountState, Grant
from service.domain.catalog import Catalog
from service.domain.errors import FieldViolation, raise_if_invalid
from service.domain.grants import GrantRequest, new_grant, revoke_grant, validate_grant, with_grant
from service.domain.validation import check_id, check_user_id
from service.usecases.tokens import issue_token
from service.usecases.writes.core import WriteCore, fingerprint
from storage.repository import Applied, HistoryDraft, IdempotencyKey, Mutation


@dataclass(frozen=True, slots=True)
class GrantEntitlement:
    request_id: str
    user_id: str
    # What the caller sent (an unset start stays unset: "when recorded").
    grant: GrantRequest

    def validate(self, catalog: Catalog, now: datetime) -> None:
        """Raises InvalidRequest naming every bad field (the ids first, then the grant)."""
        violations: list[FieldViolation] = []
        check_id(self.request_id, "request_id", violations)
        check_user_id(self.user_id, "user_id", violations)
        raise_if_invalid(violations)
        validate_grant(self.grant, catalog, now)


@dataclass(frozen=True, slots=True)
class RevokeEntitlement:
    request_id: str
    user_id: str
    grant_id: str

    def validate(self) -> None:
        violations: list[FieldViolation] = []
        check_id(self.request_id, "request_id", violations)
        check_user_id(self.user_id, "user_id", violations)
        check_id(self.grant_id, "grant_id", violations)
        raise_if_invalid(violations)


@dataclass(frozen=True, slots=True)
class GrantAnswer:
    grant: Grant
    consistency_token: str


@dataclass(frozen=True, slots=True)
class GrantReply:
    """What a grant's or a revocation's key keeps: the grant it names."""

    grant_id: str

    def stored(self) -> dict[str, str]:
        return {"grant_id": self.grant_id}

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> GrantReply:
        return cls(str(stored["grant_id"]))


class Grants:
    def __init__(self, core: WriteCore) -> None:
        self._core = core

    async def grant(self, command: GrantEntitlement) -> GrantAnswer:
        now = self._core.clock()
        command.validate(self._core.catalog, now)
        # Derived from the request, so that a retried request names the same grant.
        grant_id = "grant-" + fingerprint(command.user_id, command.request_id)[:20]
        grant = new_grant(grant_id, command.grant, now)
        target = command.grant.feature_id or f"plan {command.grant.plan_id}"
        until = grant.expires_at.isoformat() if grant.expires_at else "no end"
        summary = f"{grant.kind.value} grant of {target} from {grant.starts_at.isoformat()}"
        summary += f" until {until}"

        def mutate(account: AccountState) -> Mutation:
            return Mutation(
                state=with_grant(account, grant),
                response=GrantReply(grant_id).stored(),
                history=(HistoryDraft("grant", grant_id, grant.starts_at, summary),),
            )

        # What the caller sent: a retry of the same request matches, whenever it arrives.
        key = IdempotencyKey("grant", command.request_id, fingerprint(command.grant))
        applied = await self._core.apply("grant", command.user_id, key, mutate, now)
        return _answer(command.user_id, applied)

    async def revoke(self, command: RevokeEntitlement) -> GrantAnswer:
        command.validate()
        now = self._core.clock()
        grant_id = command.grant_id

        def mutate(account: AccountState) -> Mutation:
            updated, revoked = revoke_grant(account, grant_id, now)
            if updated == account:
                # Revoking a revoked grant changes nothing: no version, no history; the
                # answer is the grant as revoked first, with the current version's token.
                return Mutation.unchanged(GrantReply(grant_id).stored())
            return Mutation(
                state=updated,
                response=GrantReply(grant_id).stored(),
                history=(
                    HistoryDraft(
                        "revoke",
                        grant_id,
                        now,  # the grant's revoked_at
                        f"revoked {revoked.kind.value} grant {grant_id}",
                    ),
                ),
            )

        key = IdempotencyKey("revoke", command.request_id, fingerprint(grant_id))
        applied = await self._core.apply("revoke", command.user_id, key, mutate, now)
        return _answer(command.user_id, applied)


def _answer(user_id: str, applied: Applied) -> GrantAnswer:
    grant_id = GrantReply.from_stored(applied.response).grant_id
    grant = next(g for g in applied.state.grants if g.grant_id == grant_id)
    return GrantAnswer(grant, issue_token(user_id, applied.version))
