"""The documentation resolves: relative links in the README and docs/ point at files of the
repository, sources cite the repository's own docs (never a design brief outside it), and every
`docs/<file>.md, "Section"` citation names a heading that file has."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CITATION = re.compile(r"(docs/[\w./-]+\.md), \"([^\"]+)\"")


def tracked(*patterns: str) -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / line for line in out.splitlines() if (ROOT / line).is_file()]


def markdown_files() -> list[Path]:
    return tracked("README.md", "docs/*.md")


def headings(path: Path) -> set[str]:
    return {line.lstrip("#").strip() for line in path.read_text().splitlines()
            if line.startswith("#")}


def test_relative_links_in_the_docs_point_at_files_of_the_repository():
    broken = []
    for doc in markdown_files():
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or an anchor in the same file
            path = (doc.parent / target.split("#", 1)[0]).resolve()
            if not path.exists() or ROOT not in path.parents:
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_sources_and_docs_cite_only_the_repository_s_own_docs():
    files = tracked("*.py", "*.h", "*.cuh", "*.cpp", "*.cu", "*.md", "Makefile", ".ci/run")
    citing = [str(f.relative_to(ROOT)) for f in files
              if f.name != "test_docs.py" and "DESIGN.md" in f.read_text(errors="replace")]
    assert not citing, f"cite DESIGN.md, which is not in the repository: {citing}"


def test_section_citations_name_headings_that_exist():
    files = tracked("*.py", "*.h", "*.cuh", "*.cpp", "*.cu", "*.md")
    missing = []
    for f in files:
        for doc, section in CITATION.findall(f.read_text(errors="replace")):
            target = ROOT / doc
            if not target.exists() or section not in headings(target):
                missing.append(f"{f.relative_to(ROOT)}: {doc}, \"{section}\"")
    assert not missing, missing
