"""Every relative link in README.md, CHANGELOG.md and docs/ points at a file of the checkout,
and every anchor (`page.md#heading`, `#heading`) at a heading of that page, as GitHub renders
it. The README is short and sends readers to docs/: a page renamed or a heading reworded must
not leave a dead link behind.

Links to other sites (any `scheme:`) are not followed (there is no network here). Links inside
fenced code blocks and inline code are not links, and are skipped."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title"), text may hold one level of brackets ([`x`], [a [b] c]).
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# [label]: target
_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:[^>]*\s)?(?:id|name)=\"([^\"]+)\"", re.IGNORECASE)


def documents() -> list[Path]:
    """The pages whose links are checked."""
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [page for page in pages if page.is_file()]


def _prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code blanked out."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, _CODE_SPAN.sub(lambda match: "code", line)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed but
    `-` and `_`, spaces turned into `-`."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text)
    text = text.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a page has: its headings' slugs (repeats numbered -1, -2, as GitHub does)
    and explicit `<a id=...>` / `<a name=...>` anchors."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        found.update(_HTML_ANCHOR.findall(line))
        heading = _HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> Iterator[tuple[int, str]]:
    """(line number, target) of every link of a page, external ones included."""
    for number, line in _prose_lines(page.read_text(encoding="utf-8")):
        for match in _INLINE.finditer(line):
            yield number, match.group(1)
        definition = _DEFINITION.match(line)
        if definition:
            yield number, definition.group(1)


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """One line per link of `page` that does not resolve inside `root`."""
    problems: list[str] = []
    for number, target in links(page):
        if _SCHEME.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        where = f"{page.relative_to(root)}:{number}: {target}"
        destination = (page.parent / path_part).resolve() if path_part else page
        if root.resolve() not in (destination, *destination.parents):
            problems.append(f"{where}: points outside the checkout")
            continue
        if not destination.exists():
            problems.append(f"{where}: no such file or folder")
            continue
        if anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            problems.append(f"{where}: no heading or anchor #{anchor} in {destination.name}")
    return problems


def test_the_checked_pages_include_the_readme_and_docs() -> None:
    names = {page.relative_to(ROOT).as_posix() for page in documents()}
    assert "README.md" in names
    assert {"docs/RUNBOOK.md", "docs/SLO.md", "docs/SETTINGS.md"} <= names


@pytest.mark.parametrize("page", documents(), ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    problems = broken_links(page)
    assert not problems, "dead links:\n" + "\n".join(problems)


def test_the_readme_sends_readers_to_every_docs_page() -> None:
    """A page in docs/ that the README does not name is a page nobody finds."""
    named = {target.partition("#")[0] for _, target in links(ROOT / "README.md")}
    pages = {page.relative_to(ROOT).as_posix() for page in (ROOT / "docs").glob("*.md")}
    assert not pages - named, f"docs pages the README does not link: {sorted(pages - named)}"


# Code and configuration point at documentation by page and section: `docs/API.md, "For client
# teams"` (`README "X"` too). The text may wrap onto a comment's next line.
_SECTION_POINTER = re.compile(
    r'(README(?:\.md)?|docs/[A-Za-z_]+\.md),?\s+\(?"([^"\n]+(?:\n[\s#*/]*[^"\n]+)?)"'
)
_POINTING_FILES = ("*.py", "*.yaml", "*.yml", "*.toml", "*.sh", "*.md", "Makefile", "Dockerfile")
_NOT_SCANNED = {".git", ".venv", "generated", "node_modules", "results"}


def pointing_files(root: Path = ROOT) -> Iterator[Path]:
    for pattern in _POINTING_FILES:
        for path in root.rglob(pattern):
            parts = set(path.relative_to(root).parts)
            if not parts & _NOT_SCANNED and not any(p.startswith(".") for p in parts - {"."}):
                yield path


def sections(page: Path) -> set[str]:
    """What a pointer may name: the page's headings and its bold paragraph leads
    (`**Deploying.**`), lower case, without trailing punctuation."""
    text = page.read_text(encoding="utf-8")
    found = {match.group(2) for line in text.splitlines() if (match := _HEADING.match(line))}
    found |= set(re.findall(r"\*\*([^*\n]+)\*\*", text))
    return {" ".join(name.split()).rstrip(".:").lower() for name in found}


def test_section_pointers_in_code_and_config_name_a_section_of_the_page() -> None:
    """`README, "Performance"` in a comment went stale when the README was split into docs/:
    every such pointer names a page that exists and a heading or bold lead on it."""
    wrong: list[str] = []
    for path in pointing_files():
        if path == Path(__file__):
            continue
        for match in _SECTION_POINTER.finditer(path.read_text(encoding="utf-8", errors="replace")):
            page_name, section = match.groups()
            page = ROOT / ("README.md" if page_name.startswith("README") else page_name)
            named = " ".join(re.sub(r"[#*/]", " ", section).split()).rstrip(".:").lower()
            where = f"{path.relative_to(ROOT)}: {page_name} {section!r}"
            if not page.is_file():
                wrong.append(f"{where}: no such page")
            elif not any(known.startswith(named) for known in sections(page)):
                wrong.append(f"{where}: no such section")
    assert not wrong, "pointers to sections that do not exist:\n" + "\n".join(wrong)


def test_the_checker_finds_dead_files_and_anchors(tmp_path: Path) -> None:
    """The checker itself: a missing file, a missing heading, a link out of the tree are
    reported; a good link, a repeated heading's numbered anchor, an explicit anchor, an
    external link and links inside code are not."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "B.md").write_text(
        '# Page B\n\n## The `write` path, step 1\n\n## Again\n\n## Again\n\n<a id="kept"></a>\n',
        encoding="utf-8",
    )
    page = tmp_path / "README.md"
    page.write_text(
        "\n".join(
            [
                "# Top",
                "[ok](docs/B.md) [ok](docs/B.md#the-write-path-step-1) [ok](#top)",
                "[ok](docs/B.md#again-1) [ok](docs/B.md#kept) [ext](https://example.org/x)",
                "`[in code](missing.md)`",
                "```",
                "[in a fence](missing.md)",
                "```",
                "[gone](docs/C.md)",
                "[no anchor](docs/B.md#the-read-path)",
                "[own anchor](#nowhere)",
                "[out](../outside.md)",
                "[ref]: docs/D.md",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    (tmp_path.parent / "outside.md").write_text("# Out\n", encoding="utf-8")
    problems = broken_links(page, root=tmp_path)
    assert [problem.split(": ", 1)[0] for problem in problems] == [
        "README.md:8",
        "README.md:9",
        "README.md:10",
        "README.md:11",
        "README.md:12",
    ], problems
