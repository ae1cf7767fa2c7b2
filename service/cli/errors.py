"""The CLI's own error type."""

from __future__ import annotations


class UsageError(Exception):
    """A command-line value the command cannot use; reported as `error: ...`, exit status 2."""
