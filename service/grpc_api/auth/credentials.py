"""The credentials file: principals, their roles and the SHA-256 digests of their tokens.

    principals:
      - name: checkout-backend      # who, as written to the audit log
        role: admin                 # admin: every RPC; service: the read RPCs
        token_sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8

(YAML or JSON with the same shape.) The file never holds a token, only its digest. A token
travels as call metadata, `authorization: Bearer <token>` (AUTHORIZATION, BEARER).
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

AUTHORIZATION = "authorization"
# The value of the authorization entry: "Bearer" and the token (RFC 6750 token syntax).
BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class Role(enum.StrEnum):
    ADMIN = "admin"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role


class CredentialsError(ValueError):
    """The credentials file (or the development credentials) cannot be used."""


def token_digest(token: str) -> str:
    """The SHA-256 hex digest of a token, as the credentials file stores it."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Credential:
    principal: Principal
    digest: bytes  # SHA-256 of the token (32 bytes)


_ENTRY_KEYS = frozenset({"name", "role", "token_sha256"})


def parse_credentials(document: Any, source: str = "credentials") -> tuple[Credential, ...]:
    """Validates a parsed credentials document; every problem names the bad entry."""
    if not isinstance(document, dict) or not isinstance(document.get("principals"), list):
        raise CredentialsError(f"{source}: expected a mapping with a list 'principals'")
    if set(document) - {"principals"}:
        unknown = ", ".join(sorted(map(str, set(document) - {"principals"})))
        raise CredentialsError(f"{source}: unknown top-level keys: {unknown}")
    entries: list[Credential] = []
    names: set[str] = set()
    digests: set[bytes] = set()
    for index, entry in enumerate(document["principals"]):
        where = f"{source}: principals[{index}]"
        if not isinstance(entry, dict):
            raise CredentialsError(f"{where}: expected a mapping with name, role, token_sha256")
        if "token" in entry:
            raise CredentialsError(
                f"{where}: plaintext 'token' found; store only token_sha256, the SHA-256 hex "
                "digest of the token"
            )
        if set(entry) != _ENTRY_KEYS:
            missing = ", ".join(sorted(_ENTRY_KEYS - set(entry)))
            extra = ", ".join(sorted(map(str, set(entry) - _ENTRY_KEYS)))
            raise CredentialsError(
                f"{where}: expected keys name, role, token_sha256"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {extra}" if extra else "")
            )
        name, role, digest = entry["name"], entry["role"], entry["token_sha256"]
        if not isinstance(name, str) or not name.strip():
            raise CredentialsError(f"{where}.name: expected a non-empty string")
        where = f"{source}: principals[{index}] ({name})"
        if name in names:
            raise CredentialsError(f"{where}.name: duplicate principal name")
        if role not in {r.value for r in Role}:
            roles = ", ".join(r.value for r in Role)
            raise CredentialsError(f"{where}.role: {role!r} is not one of {roles}")
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise CredentialsError(f"{where}.token_sha256: expected 64 hex digits (SHA-256)")
        raw = bytes.fromhex(digest)
        if raw in digests:
            raise CredentialsError(f"{where}.token_sha256: the same token is listed twice")
        names.add(name)
        digests.add(raw)
        entries.append(Credential(Principal(name, Role(role)), raw))
    if not entries:
        raise CredentialsError(f"{source}: 'principals' is empty")
    return tuple(entries)


def load_credentials(path: Path) -> tuple[Credential, ...]:
    """Reads a credentials file (YAML, or JSON, which YAML parsers read too)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CredentialsError(f"cannot read credentials file {path}: {exc.strerror}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CredentialsError(f"{path}: not valid YAML or JSON: {exc}") from exc
    return parse_credentials(document, str(path))


def credentials_yaml(principals: Iterable[tuple[str, Role, str]], header: str = "") -> str:
    """A credentials file for (name, role, plaintext token) triples; it stores digests."""
    document = {
        "principals": [
            {"name": name, "role": role.value, "token_sha256": token_digest(token)}
            for name, role, token in principals
        ]
    }
    comment = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines())
    return comment + yaml.safe_dump(document, sort_keys=False)
