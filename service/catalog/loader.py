"""Reading a catalog file: YAML, validated by `parse_catalog`."""

from __future__ import annotations

from pathlib import Path

import yaml

from service.catalog.parser import CatalogError, parse_catalog
from service.domain.catalog import Catalog

# The catalog shipped with the service (the default of `Settings.catalog_path`).
EXAMPLE_CATALOG = Path(__file__).resolve().parent / "example_catalog.yaml"


def load_catalog(path: str | Path = EXAMPLE_CATALOG) -> Catalog:
    """The catalog in the YAML file at `path`, or CatalogError listing every problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError([f"cannot read {path}: {exc.strerror}"]) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError([f"{path}: not valid YAML: {exc}"]) from exc
    return parse_catalog(raw)
