"""Reading the values of a parsed YAML document while collecting every problem with its
path (`ValueReader`): mappings, lists of entries, identifiers, text, integers, enum values
and timestamps, each checked and, when wrong, reported and replaced by a harmless value so
that reading goes on and every problem is reported at once."""

from __future__ import annotations

import enum
import re
from datetime import UTC, datetime
from typing import Any, TypeVar

IDENTIFIER = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
E = TypeVar("E", bound=enum.Enum)


class ValueReader:
    """Reads values, collecting the problems in `problems` ("path: message")."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.problem(where, f"expected a mapping, got {type(value).__name__}")
            return {}
        return value

    def entries(self, raw: dict[str, Any], key: str) -> list[tuple[str, dict[str, Any]]]:
        value = raw.get(key, [])
        if not isinstance(value, list):
            self.problem(key, "expected a list")
            return []
        out = []
        for index, item in enumerate(value):
            where = f"{key}[{index}]"
            if isinstance(item, dict) and isinstance(item.get("id") or item.get("country"), str):
                where += f" ({item.get('id') or item.get('country')})"
            out.append((where, self.mapping(item, where)))
        return out

    def listed(self, value: Any, where: str, key: str) -> list[Any]:
        """A list-valued setting (null counts as empty)."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(where, f"'{key}' must be a list, got {value!r}")
            return []
        return value

    def check_keys(self, entry: dict[str, Any], where: str, allowed: set[str]) -> None:
        for key in sorted(set(entry) - allowed, key=str):
            self.problem(where, f"unknown key '{key}' (allowed: {', '.join(sorted(allowed))})")

    def identifier(self, entry: dict[str, Any], key: str, where: str) -> str:
        value = entry.get(key)
        if not isinstance(value, str) or not IDENTIFIER.match(value):
            self.problem(where, f"'{key}' must be a lower-case identifier, got {value!r}")
            return ""
        return value

    def text(self, entry: dict[str, Any], key: str, where: str) -> str:
        value = entry.get(key, "")
        if not isinstance(value, str):
            self.problem(where, f"'{key}' must be text, got {type(value).__name__}")
            return ""
        return value

    def integer(
        self, entry: dict[str, Any], key: str, where: str, default: int | None = None, low: int = 0
    ) -> int:
        value = entry.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            self.problem(where, f"'{key}' must be an integer >= {low}, got {value!r}")
            return low
        return value

    def enum_value(self, enum_type: type[E], value: Any, where: str, key: str) -> E | None:
        try:
            return enum_type(value)
        except ValueError:
            allowed = ", ".join(member.value for member in enum_type)
            self.problem(where, f"'{key}' must be one of {allowed}, got {value!r}")
            return None

    def timestamp(self, value: Any, where: str, key: str) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            parsed = value
        else:
            try:
                parsed = datetime.fromisoformat(str(value))
            except ValueError:
                self.problem(where, f"'{key}' must be an ISO 8601 timestamp, got {value!r}")
                return None
        if parsed.tzinfo is None:
            self.problem(where, f"'{key}' must carry a time zone (e.g. 'Z'), got {value!r}")
            return None
        return parsed.astimezone(UTC)
