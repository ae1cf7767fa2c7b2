"""The example catalog as a mutable document, and the problems parsing one reports."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from service.catalog import EXAMPLE_CATALOG, CatalogError, parse_catalog

Doc = dict[str, Any]


EXAMPLE_TEXT = EXAMPLE_CATALOG.read_text(encoding="utf-8")


EXAMPLE_RAW: Doc = yaml.safe_load(EXAMPLE_TEXT)


def raw_copy() -> Doc:
    """A fresh, mutable copy of the parsed example document."""
    doc: Doc = copy.deepcopy(EXAMPLE_RAW)
    return doc


def problems_of(doc: Any) -> list[str]:
    with pytest.raises(CatalogError) as info:
        parse_catalog(doc)
    problems = info.value.problems
    assert problems, "CatalogError without problems"
    assert all(p in str(info.value) for p in problems)
    return problems


def assert_problem(problems: list[str], where: str, *fragments: str) -> None:
    """Some problem starts with `where` (the path of the bad entry) and contains every
    fragment."""
    matching = [p for p in problems if p.startswith(where + ":") and all(f in p for f in fragments)]
    assert matching, f"no problem at {where!r} with {fragments!r} in:\n" + "\n".join(problems)
