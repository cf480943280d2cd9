"""The documentation's links resolve, the README lists every command, and the bundles' docs name only
the transforms their configs use."""

from __future__ import annotations

import json
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


def config_targets(item) -> set[str]:
    """The class names (last dotted part) of every ``_target_`` in a parsed config."""
    if isinstance(item, dict):
        own = {str(item["_target_"]).rsplit(".", 1)[-1]} if "_target_" in item else set()
        return own.union(*(config_targets(value) for value in item.values()))
    if isinstance(item, list):
        return set().union(*(config_targets(value) for value in item))
    return set()


@pytest.mark.parametrize("bundle", ["atria_localizer", "atria_segmenter"])
def test_bundle_docs_name_only_transforms_their_configs_use(bundle):
    """A transform (MONAI's or this package's) named in a bundle's docs/README.md is a ``_target_`` of one
    of its configs: the docs follow the configs when a transform is swapped."""
    import monai.transforms

    from cascade import intensity, transforms

    folder = ROOT / "bundles" / bundle
    used = set().union(*(config_targets(json.loads(path.read_text())) for path in (folder / "configs").glob("*.json")))
    named = set(re.findall(r"\b[A-Z][A-Za-z0-9]+\b", (folder / "docs" / "README.md").read_text()))
    classes = [getattr(module, name, None) for name in named for module in (monai.transforms, transforms, intensity)]
    named_transforms = {
        c.__name__ for c in classes if isinstance(c, type) and issubclass(c, monai.transforms.Transform)
    }
    assert named_transforms, "the docs name the pipeline's transforms"
    unused = sorted(named_transforms - used)
    assert not unused, f"docs/README.md names transforms no config uses: {unused}"
