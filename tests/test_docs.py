"""The documentation site: `mkdocs build --strict` (a link to a missing page, file or anchor, or a page left out of
the nav, fails it) renders every page of the nav and copies the figures."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("mkdocs")

REPO = Path(__file__).resolve().parent.parent


def nav_pages(nav) -> list[str]:
    """The Markdown files of a mkdocs nav: entries are `page.md`, `{title: page.md}` or `{title: [sections]}`."""
    pages = []
    for entry in nav:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            pages.extend(nav_pages(value) if isinstance(value, list) else [value])
    return pages


def test_site_builds_strict_with_every_nav_page_and_figure(tmp_path):
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    pages = nav_pages(config["nav"])
    assert pages[0] == "index.md" and len(pages) == len(set(pages))
    docs = REPO / config.get("docs_dir", "docs")
    for page in pages:
        name = page.removesuffix(".md")
        html = tmp_path / ("index.html" if name == "index" else f"{name}/index.html")
        assert html.is_file(), page
        assert "<h1" in html.read_text(encoding="utf-8"), page
    for figure in (docs / "figures").glob("*"):
        assert (tmp_path / "figures" / figure.name).is_file(), figure.name
