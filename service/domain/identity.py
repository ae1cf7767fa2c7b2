"""Pseudonymous user references: a short digest of a user id that tells the records of one
user apart (consistency tokens, the audit log) without carrying the id itself."""

from __future__ import annotations

import hashlib

USER_DIGEST_HEX_CHARS = 16


def user_digest(user_id: str) -> str:
    """The first 16 hex digits of the SHA-256 of the user id (UTF-8)."""
    return hashlib.sha256(user_id.encode()).hexdigest()[:USER_DIGEST_HEX_CHARS]
