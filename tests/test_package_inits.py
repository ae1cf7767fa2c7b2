"""Every package's __init__.py holds a docstring, imports and `__all__` only: code lives in
modules a reader finds by name (the version is computed in service/version.py, not in
service/__init__.py)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Ours: not generated/ (made by protoc) nor installed or fetched packages.
SKIPPED = {".venv", "generated", "node_modules", ".git"}


def _package_inits() -> list[Path]:
    return sorted(
        path
        for top in ROOT.iterdir()
        if top.is_dir() and top.name not in SKIPPED
        for path in top.rglob("__init__.py")
        if not SKIPPED & set(path.parts[len(ROOT.parts) :])
    )


def _allowed(index: int, node: ast.stmt) -> bool:
    if index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
        return True  # the docstring
    if isinstance(node, ast.Import | ast.ImportFrom):
        return True
    if isinstance(node, ast.Assign | ast.AnnAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return [getattr(t, "id", None) for t in targets] == ["__all__"]
    return False


def test_init_files_hold_only_a_docstring_imports_and_all() -> None:
    inits = _package_inits()
    assert len(inits) > 10, inits  # the walk found the packages
    offending = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node).splitlines()[0]}"
        for path in inits
        for index, node in enumerate(ast.parse(path.read_text(encoding="utf-8")).body)
        if not _allowed(index, node)
    ]
    assert not offending, "code in __init__.py:\n" + "\n".join(offending)
