"""Errors the use cases raise, independent of gRPC; the servicers map them to statuses."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class InvalidRequest(Exception):
    """Bad input: answered INVALID_ARGUMENT with a google.rpc.BadRequest detail."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
        if len(violations) > 5:
            summary += f"; and {len(violations) - 5} more"
        super().__init__(f"invalid request: {summary}")
