"""The audit log of admin calls: one JSON line per call to the write service, naming who
called what, with which request id, for which (hashed) user, and how it ended.

Records go to the logger "entitlements.audit", in the format of every log line
(service.grpc_api.logs: timestamp, level, logger, message, pid, request_id, trace_id when
the call is traced) with the audit fields beside them (principal, role, method, user,
outcome, duration_ms); a logging record carries them as its `audit` attribute, its
message a one-line summary. They never carry a token nor a raw user id:
the user is the first 16 hex digits of the SHA-256 of the user id, enough to correlate the
records of one user (hash the id you are looking for the same way) without storing it.
`entitlements serve` routes the logger to stderr or to `audit_log_file`
(configure_audit_logging); a library user (tests, another server) gets plain logging records.

Every call of an authenticated principal is recorded, allowed or refused. Calls without a
principal (no token, or one nobody has) are bounded, since anyone who reaches the port can
make them: per interval, the first few are recorded one by one, the others only counted,
and the counts written as one summary line per method and outcome when the interval ends
(or the server stops): "N more unauthenticated calls to X refused in the last 60 s".
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from service.domain.identity import user_digest
from service.grpc_api.logs import AUDIT_ATTRIBUTE, JsonFormatter
from storage.files import make_private_directory

AUDIT_LOGGER = "entitlements.audit"
# Request ids are chosen by clients: bound what one record can carry.
MAX_REQUEST_ID_CHARS = 128
# Calls without a principal: recorded one by one up to this many per interval (per
# process), counted beyond it, the counts written when the interval ends.
ANONYMOUS_RECORDS_PER_INTERVAL = 10
ANONYMOUS_INTERVAL_SECONDS = 60.0

_log = logging.getLogger(AUDIT_LOGGER)
# Every AuditLog of this process, so that a stopping server writes their pending counts.
_audit_logs: weakref.WeakSet[AuditLog] = weakref.WeakSet()


def request_id_of(request: Any) -> str | None:
    """The id a request names (a write's request_id or event_id), bounded; or None."""
    for field in ("event_id", "request_id"):
        value = getattr(request, field, None)
        if isinstance(value, str) and value:
            return value[:MAX_REQUEST_ID_CHARS]
    return None


def _user(request: Any) -> str | None:
    """The digest of the user a write is about: `user_id`, or for the household RPCs the
    member (`member_user_id`), else the manager (`manager_user_id`)."""
    for field in ("user_id", "member_user_id", "manager_user_id"):
        user_id = getattr(request, field, None)
        if isinstance(user_id, str) and user_id:
            return user_digest(user_id)
    return None


class AuditLog:
    """Writes audit records to the "entitlements.audit" logger."""

    def __init__(
        self,
        logger: logging.Logger = _log,
        *,
        anonymous_records_per_interval: int = ANONYMOUS_RECORDS_PER_INTERVAL,
        anonymous_interval_seconds: float = ANONYMOUS_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._anonymous = _AnonymousCalls(
            anonymous_records_per_interval, anonymous_interval_seconds, clock, self._write
        )
        _audit_logs.add(self)

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
        request stream), `started` a time.monotonic() reading taken when the call began.
        `principal` None (an anonymous call) may only be counted (see the module)."""
        if not self._logger.isEnabledFor(logging.INFO):
            return
        method = method.lstrip("/")
        if principal is None and not self._anonymous.admit(method, outcome.name):
            return
        self._write(
            {
                "principal": principal,
                "role": role,
                "method": method,
                "request_id": request_id_of(request),
                "user": _user(request),
                "outcome": outcome.name,
                "duration_ms": round((time.monotonic() - started) * 1000, 3),
            }
        )

    def flush(self) -> None:
        """Writes the counts of anonymous calls not yet written (the server stops)."""
        self._anonymous.flush()

    def _write(self, entry: dict[str, Any]) -> None:
        self._logger.info("%s", _summary(entry), extra={AUDIT_ATTRIBUTE: entry})


def _summary(entry: dict[str, Any]) -> str:
    """The record's message: who called what and how it ended, or a summary's own text."""
    if "summary" in entry:
        return str(entry["summary"])
    who = entry["principal"] or "an unauthenticated caller"
    return f"{entry['method']} by {who}: {entry['outcome']}"


class _AnonymousCalls:
    """The bound on records of calls without a principal: an interval opens with the first
    such call; within it, `per_interval` calls are admitted (recorded one by one) and the
    others counted per (method, outcome); when it ends (a timer) or on flush, each count
    is written as one summary line."""

    def __init__(
        self,
        per_interval: int,
        interval_seconds: float,
        clock: Callable[[], float],
        write: Callable[[dict[str, Any]], None],
    ) -> None:
        self._per_interval = per_interval
        self._interval = interval_seconds
        self._clock = clock
        self._write = write
        self._lock = threading.Lock()
        self._opened: float | None = None  # clock reading when the interval opened
        self._admitted = 0
        self._counts: dict[tuple[str, str], int] = {}
        self._timer: threading.Timer | None = None

    def admit(self, method: str, outcome: str) -> bool:
        """True: record this call one by one; False: it was counted."""
        with self._lock:
            now = self._clock()
            summaries: list[dict[str, Any]] = []
            if self._opened is not None and now - self._opened >= self._interval:
                summaries = self._close(now)
            if self._opened is None:
                self._opened = now
            if self._admitted < self._per_interval:
                self._admitted += 1
                admitted = True
            else:
                key = (method, outcome)
                self._counts[key] = self._counts.get(key, 0) + 1
                admitted = False
                if self._timer is None:
                    self._timer = threading.Timer(
                        max(0.0, self._opened + self._interval - now),
                        self._on_timer,
                        args=(self._opened,),
                    )
                    self._timer.daemon = True
                    self._timer.start()
        for summary in summaries:
            self._write(summary)
        return admitted

    def flush(self) -> None:
        with self._lock:
            summaries = self._close(self._clock())
        for summary in summaries:
            self._write(summary)

    def _on_timer(self, opened: float) -> None:
        with self._lock:
            if self._opened != opened:
                return  # that interval was closed meanwhile, by a call or a flush
            self._timer = None
            summaries = self._close(self._clock())
        for summary in summaries:
            self._write(summary)

    def _close(self, now: float) -> list[dict[str, Any]]:
        """Ends the interval (under the lock): its summaries, to write outside it."""
        if self._opened is None:
            return []
        seconds = round(min(now - self._opened, self._interval), 1)
        since = datetime.now(UTC).timestamp() - (now - self._opened)
        summaries = [
            {
                "principal": None,
                "role": None,
                "method": method,
                "outcome": outcome,
                "calls": calls,
                "since": datetime.fromtimestamp(since, UTC).isoformat(timespec="milliseconds"),
                "summary": (
                    f"{calls} more unauthenticated calls to {method} "
                    + ("refused" if outcome == "UNAUTHENTICATED" else f"ended {outcome}")
                    + f" in the last {seconds:g} s (not recorded one by one)"
                ),
            }
            for (method, outcome), calls in sorted(self._counts.items())
        ]
        self._opened, self._admitted, self._counts = None, 0, {}
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return summaries


def flush_audit_summaries() -> None:
    """Writes the pending counts of anonymous calls of every AuditLog of this process: a
    stopping server calls it, so that no refused call goes unaccounted for."""
    for audit in list(_audit_logs):
        audit.flush()


def configure_audit_logging(path: Path | None) -> logging.Handler:
    """Routes audit records, as JSON lines in the log format of every line, to `path`
    (appended) or to stderr, and stops them from also reaching the root logger's handlers
    (whose format may be text). Returns the handler."""
    handler: logging.Handler
    if path is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        make_private_directory(path.parent)
        handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    _log.addHandler(handler)
    _log.setLevel(logging.INFO)
    _log.propagate = False
    return handler
