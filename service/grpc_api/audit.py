"""The audit log of admin calls: one JSON line per call to the write service, naming who
called what, with which request id, for which (hashed) user, and how it ended.

Records go to the logger "entitlements.audit". They never carry a token nor a raw user id:
the user is the first 16 hex digits of the SHA-256 of the user id, enough to correlate the
records of one user (hash the id you are looking for the same way) without storing it.
`entitlements serve` routes the logger to stderr or to `audit_log_file`
(configure_audit_logging); a library user (tests, another server) gets plain logging records.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from service.domain.identity import user_digest

AUDIT_LOGGER = "entitlements.audit"
# Request ids are chosen by clients: bound what one record can carry.
MAX_REQUEST_ID_CHARS = 128

_log = logging.getLogger(AUDIT_LOGGER)


def _request_id(request: Any) -> str | None:
    for field in ("event_id", "request_id"):
        value = getattr(request, field, None)
        if isinstance(value, str) and value:
            return value[:MAX_REQUEST_ID_CHARS]
    return None


def _user(request: Any) -> str | None:
    user_id = getattr(request, "user_id", None)
    if isinstance(user_id, str) and user_id:
        return user_digest(user_id)
    return None


class AuditLog:
    """Writes audit records to the "entitlements.audit" logger."""

    def __init__(self, logger: logging.Logger = _log) -> None:
        self._logger = logger

    def record(
        self,
        *,
        method: str,
        principal: str | None,
        role: str | None,
        request: Any,
        outcome: grpc.StatusCode,
        started: float,
    ) -> None:
        """`method` is the full gRPC method name, `request` the request message (None for a
        request stream), `started` a time.monotonic() reading taken when the call began."""
        if not self._logger.isEnabledFor(logging.INFO):
            return
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "principal": principal,
            "role": role,
            "method": method.lstrip("/"),
            "request_id": _request_id(request),
            "user": _user(request),
            "outcome": outcome.name,
            "duration_ms": round((time.monotonic() - started) * 1000, 3),
            # Which worker process served it (serve --workers N).
            "pid": os.getpid(),
        }
        self._logger.info(json.dumps(entry, separators=(",", ":")))


def configure_audit_logging(path: Path | None) -> logging.Handler:
    """Routes audit records, as bare JSON lines, to `path` (appended) or to stderr, and
    stops them from also reaching the root logger's handlers. Returns the handler."""
    handler: logging.Handler
    if path is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    _log.addHandler(handler)
    _log.setLevel(logging.INFO)
    _log.propagate = False
    return handler
