"""The server's log lines: one JSON object per line (or plain text for a terminal).

Every line has timestamp (UTC, ISO 8601), level, logger, message and pid, plus
request_id (and trace_id) when the event happened while serving a call that carries one;
an exception's traceback travels in the same line ("exception"). Nothing logged may carry
a token, a credential or a raw user id: log `user_digest(user_id)` where a user matters.
The audit log (service.grpc_api.audit) has its own destination but this format: its
records carry their fields in the attribute AUDIT_ATTRIBUTE, which join the line's.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

# Set while serving a call that names a request (a write's request_id or event_id); log
# lines written in its task, and in the store threads it runs (copied context), carry it.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
# The trace of the call, when tracing is on (docs/OPERATIONS.md, "Tracing").
trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The attribute of a logging record holding an audit record's fields (a dict).
AUDIT_ATTRIBUTE = "audit"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process or os.getpid(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        trace_id = trace_id_var.get()
        if trace_id:
            entry["trace_id"] = trace_id
        fields = getattr(record, AUDIT_ATTRIBUTE, None)
        if isinstance(fields, dict):
            # Beside the line's own; an audit record's request_id (None: the call named
            # none) is the call's, as is the context's.
            entry.update((k, v) for k, v in fields.items() if k not in entry or v is not None)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, separators=(",", ":"), ensure_ascii=False, default=str)


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    """Routes the root logger to stderr in `log_format` ("json" or "text"), replacing
    whatever handlers it had (the command line's plain default)."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
