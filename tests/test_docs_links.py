"""The documentation points only inside the repository: relative links resolve, and nothing names files that live
outside it (design notes, reference checkouts, a shared folder next to the repository)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Where the code and documentation live: every file under these is searched for outside references.
SEARCHED = [ROOT / "leod_core", ROOT / "rules", ROOT / "Snakefile", ROOT / "docs", ROOT / "README.md"]
#: Names of things outside the repository that a file must not depend on.
OUTSIDE_REFERENCES = ("DESIGN.md", "reference/leod", "reference/rvt", "../shared")

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def relative_links(markdown: str) -> list[str]:
    """Link targets of ``markdown`` that are paths (no URL scheme, not only an anchor), code spans left out."""
    text = _INLINE_CODE.sub("", _FENCE.sub("", markdown))
    targets = _INLINE_LINK.findall(text) + _REFERENCE_LINK.findall(text)
    return [t for t in targets if not _EXTERNAL.match(t) and not t.startswith("#")]


def test_relative_links_are_found_and_urls_anchors_and_code_are_not():
    text = ("[a](docs/x.md#part) [b](https://example.org/y.md) [c](#anchor) `[d](in/code.md)`\n"
            "```\n[e](in/fence.md)\n```\n[f]: ../g.md \"title\"\n")
    assert relative_links(text) == ["docs/x.md#part", "../g.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files_in_the_repository(doc):
    broken = []
    for target in relative_links(doc.read_text(encoding="utf-8")):
        path = (doc.parent / target.split("#", 1)[0].split("?", 1)[0]).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            broken.append(target)
    assert not broken, f"{doc.relative_to(ROOT)}: links to missing or outside files: {broken}"


def _searched_files() -> list[Path]:
    files = []
    for place in SEARCHED:
        candidates = [place] if place.is_file() else sorted(p for p in place.rglob("*") if p.is_file())
        files += [p for p in candidates if "__pycache__" not in p.parts]
    return files


def test_no_file_refers_to_paths_outside_the_repository():
    found = []
    for path in _searched_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # binary files (images) hold no references
            continue
        found += [f"{path.relative_to(ROOT)}: {name}" for name in OUTSIDE_REFERENCES if name in text]
    assert not found, found
