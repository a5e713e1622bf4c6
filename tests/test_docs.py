"""The documentation's links resolve, and the code's references into it name real sections.

Every relative Markdown link in README.md and docs/ must point at a file that exists, and an
anchor at a heading of the target, slugged as GitHub does. Comments, error messages and
deployment files cite sections as (docs/<page>.md, "<Section>") or (README, "<Section>"):
each must name an existing page and one of its headings, so moving a section breaks a test
instead of leaving a reference that leads nowhere.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
# [text](target) and ![alt](target), with an optional "title"; the text may wrap lines.
LINK = re.compile(r"!?\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = ("http://", "https://", "mailto:")

# Where the code cites the docs: comments, docstrings, error messages, manifests.
CITING = ["app", "scripts", "tests", "deploy", "k8s", ".ci"]
CITING_FILES = ["gunicorn_conf.py", "nginx.conf", "supervisor.conf", "Dockerfile", "Makefile", "pyproject.toml"]
# (docs/models.md, "Checkpoint forms"), (README, 'API'), with the quote on the next line of a
# comment or docstring allowed.
CITATION = re.compile(r"""(README(?:\.md)?|docs/[\w./-]+?\.md),\s*(?:#\s*)?(["'])([^"'\n]+)\2""")


def prose(text: str) -> str:
    """The text with fenced code blocks blanked (line numbers kept)."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            out.append("")
        else:
            out.append("" if fenced else line)
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: links reduced to their text, lowercased, punctuation
    other than '-' and '_' dropped, each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def headings(page: Path) -> list[str]:
    return [m.group(2) for line in prose(page.read_text()).splitlines() if (m := HEADING.match(line))]


def anchors(page: Path) -> set[str]:
    """Every anchor of a page; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for heading in headings(page):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[tuple[int, str]]:
    """(line, target) of every link outside code blocks and code spans."""
    text = prose(page.read_text())
    # A code span may be link text ([`x`](y)) but is never a link itself: keep its content
    # minus brackets, and keep its newlines so line numbers hold.
    text = CODE_SPAN.sub(lambda m: re.sub(r"[\[\]()]", "_", m.group(2)), text)
    return [(text.count("\n", 0, m.start()) + 1, m.group(2)) for m in LINK.finditer(text)]


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for line, target in links(page):
        if target.startswith(EXTERNAL):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / unquote(path)).resolve() if path else page
        where = f"{page.relative_to(root)}:{line}: ({target})"
        if not dest.exists():
            problems.append(f"{where}: no such file {dest}")
        elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            problems.append(f"{where}: no heading with anchor #{anchor} in {dest}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_the_pages_are_found_and_the_checker_can_fail(tmp_path: Path) -> None:
    assert {"README.md", "docs/models.md", "docs/operations.md"} <= {str(p.relative_to(ROOT)) for p in PAGES}
    (tmp_path / "README.md").write_text("# Title\n\n## API\n")
    (tmp_path / "docs" / "bench").mkdir(parents=True)
    (tmp_path / "docs" / "bench" / "chart.png").write_bytes(b"")
    page = tmp_path / "docs" / "probe.md"
    page.write_text(
        "# A\n\n## A\n\n## Two words, `code` & more\n\n```\n[in code](nowhere.md)\n```\n\n"
        "[ok](#a) [ok](#a-1) [ok](#two-words-code--more) [ok](../README.md#api)\n"
        "[bad](#a-2) [bad](missing.md) [bad](../README.md#no-such-section) `[code](nowhere.md)`\n"
        "[ok](https://example.com/missing.md) ![ok](bench/chart.png)\n"
    )
    problems = broken_links(page, tmp_path)
    assert [p.split(": (", 1)[1].split(")", 1)[0] for p in problems] == [
        "#a-2",
        "missing.md",
        "../README.md#no-such-section",
    ]


def citing_files() -> list[Path]:
    files = [ROOT / name for name in CITING_FILES if (ROOT / name).is_file()]
    for folder in CITING:
        if (ROOT / folder).is_dir():
            files += [p for p in sorted((ROOT / folder).rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    files += sorted(ROOT.glob("requirements*.txt"))
    return [p for p in files if p != Path(__file__).resolve()]


def citations() -> list[tuple[str, str, str]]:
    """(where, page, section) of every citation of the docs in code and deployment files."""
    found = []
    for path in citing_files():
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        for m in CITATION.finditer(text):
            page = "README.md" if m.group(1).startswith("README") else m.group(1)
            line = text.count("\n", 0, m.start()) + 1
            found.append((f"{path.relative_to(ROOT)}:{line}", page, m.group(3)))
    return found


def plain(heading: str) -> str:
    return re.sub(r"[`*_]", "", heading).strip().casefold()


def test_code_cites_existing_pages_and_sections() -> None:
    found = citations()
    assert len(found) >= 10, found  # the scan itself works
    problems = []
    for where, page, section in found:
        target = ROOT / page
        if not target.is_file():
            problems.append(f"{where}: no page {page}")
        elif plain(section) not in {plain(h) for h in headings(target)}:
            problems.append(f'{where}: {page} has no heading "{section}"')
    assert problems == []
