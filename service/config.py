"""Service configuration, read once at startup from defaults, environment and flags."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.domain.catalog import EXAMPLE_CATALOG

DEFAULT_STORAGE_URL = "sqlite:///data/entitlements.db"
ENV_PREFIX = "ENTITLEMENTS_"


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 50051
    storage_url: str = DEFAULT_STORAGE_URL
    catalog_path: Path = EXAMPLE_CATALOG
    # Entries of the per-process user state cache (one entry per user).
    cache_max_entries: int = 100_000
    # How long cached state may be served without a consistency token after a write made
    # through another process. 0 disables the cache.
    cache_ttl_seconds: float = 30.0
    # gRPC handler threads per process.
    threads: int = 16
    # On SIGTERM, in-flight RPCs get this long to finish.
    shutdown_grace_seconds: float = 5.0

    @classmethod
    def load(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> Settings:
        """Defaults, overridden by ENTITLEMENTS_<FIELD> variables, overridden by flags
        (`overrides` whose value is not None)."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = _coerce(field.name, field.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "catalog_path" in values:
            values["catalog_path"] = Path(values["catalog_path"])
        return cls(**values)


def _coerce(name: str, type_name: Any, raw: str) -> Any:
    kind = str(type_name)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}: expected a {kind}, got {raw!r}") from exc
    if kind == "Path":
        return Path(raw)
    return raw
