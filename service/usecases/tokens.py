"""Consistency tokens: opaque to callers, they carry the user's state version after a
write, so that a later read is never answered from older state in any process.

Format: base64url("1.<user digest>.<version>"). The user digest binds a token to its user
without putting the user id in it (tokens end up in logs of other systems).

A household member's state includes their manager's subscriptions, so a read of a member
may also pass the manager's token (from a write of the manager, or CreateHousehold's):
it is answered from state whose household part is at least that manager version
(`household_behind`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from service.domain.account import UserState
from service.domain.errors import FieldViolation
from service.domain.identity import user_digest

_FORMAT = "1"
MAX_TOKEN_LENGTH = 128


class MalformedToken(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ConsistencyToken:
    user_digest: str
    version: int

    def applies_to(self, user_id: str) -> bool:
        return self.user_digest == user_digest(user_id)


def household_behind(token: ConsistencyToken | None, state: UserState) -> bool:
    """Whether `token` is the token of the manager of the household `state` follows and
    `state` was read at an older version of the manager: it misses the manager's write,
    so a read with the token must read the member's state again."""
    household = state.household
    return (
        token is not None
        and household is not None
        and household.manager_version < token.version
        and token.applies_to(household.manager_user_id)
    )


def issue_token(user_id: str, version: int) -> str:
    raw = f"{_FORMAT}.{user_digest(user_id)}.{version}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def parse_token(token: str) -> ConsistencyToken:
    if len(token) > MAX_TOKEN_LENGTH:
        raise MalformedToken("too long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise MalformedToken("not a consistency token") from exc
    parts = raw.split(".")
    if len(parts) != 3 or parts[0] != _FORMAT or len(parts[1]) != 16 or not parts[2].isdigit():
        raise MalformedToken("not a consistency token")
    return ConsistencyToken(parts[1], int(parts[2]))


def check_token(token: str, field: str, out: list[FieldViolation]) -> ConsistencyToken | None:
    """The parsed token, None when absent; a malformed one is a violation of `field`."""
    if not token:
        return None
    try:
        return parse_token(token)
    except MalformedToken as exc:
        out.append(FieldViolation(field, f"malformed consistency token ({exc})"))
        return None
