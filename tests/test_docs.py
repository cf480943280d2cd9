"""The documentation's links resolve and the README lists every command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cascade.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "apps" / "monailabel" / "README.md",
        *sorted((ROOT / "docs").glob("*.md"))]


def anchors(markdown: Path) -> set[str]:
    """GitHub's anchors of a file's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("document", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_their_sections_exist(document):
    for target in re.findall(r"\]\(([^)\s]+)\)", document.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        assert linked.exists(), f"{document.name}: link to missing {target}"
        if anchor:
            assert anchor in anchors(linked), f"{document.name}: no section #{anchor} in {linked.name}"


def test_the_readme_names_every_command():
    readme = (ROOT / "README.md").read_text()
    for name in COMMANDS:
        assert f"`cascade {name} " in readme or f"`cascade {name}`" in readme, name
