"""Authentication: the principal a call's bearer token names, and the principal of the
call being served (set by the RPC guard, read by handlers through current_principal).

A presented token is hashed and compared with every principal's digest in constant time.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
from collections.abc import Iterable

from service.grpc_api.auth.credentials import AUTHORIZATION, BEARER, Credential, Principal

# --- authentication -------------------------------------------------------------------


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of the one `authorization: Bearer <token>` entry, or None when it is
    missing, repeated or malformed."""
    found: str | None = None
    seen = False
    for key, value in metadata or ():
        if key != AUTHORIZATION:
            continue
        if seen or not isinstance(value, str):
            return None
        seen = True
        match = BEARER.fullmatch(value)
        found = match.group(1) if match else None
    return found


class Authenticator:
    """Maps a presented bearer token to its principal."""

    def __init__(self, credentials: Iterable[Credential]) -> None:
        self._entries = tuple((c.digest, c.principal) for c in credentials)

    @property
    def principals(self) -> tuple[Principal, ...]:
        return tuple(principal for _, principal in self._entries)

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal | None:
        token = bearer_token(metadata)
        if token is None:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        # Every digest is compared, in constant time, whichever matches: the time taken
        # tells nothing about which principal (if any) a guess came close to.
        found: Principal | None = None
        for candidate, principal in self._entries:
            if hmac.compare_digest(candidate, digest):
                found = principal
        return found


# --- the principal of the call being served -------------------------------------------

current_principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "entitlements_principal", default=None
)


def current_principal() -> Principal | None:
    """The authenticated principal of the call the current handler serves."""
    return current_principal_var.get()
