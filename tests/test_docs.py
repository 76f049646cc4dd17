"""The README is a front page, docs/ holds the rest, and every relative link resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from warmtune.spec import job_from_dict

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").rglob("*.md"))]
DOC_PAGES = [
    "job-files.md",
    "searchers-and-warm-starts.md",
    "trainables/fewshot.md",
    "trainables/nas.md",
    "benchmarks.md",
    "reports.md",
    "cluster.md",
    "performance.md",
    "data.md",
    "development.md",
]

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _slugs(page: Path) -> set[str]:
    """GitHub's anchors for the headings of ``page``."""
    seen: dict[str, int] = {}
    slugs = set()
    for line in _FENCE.sub("", page.read_text()).splitlines():
        if not line.startswith("#"):
            continue
        text = line.lstrip("#").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        slugs.add(slug if count == 0 else f"{slug}-{count}")
    return slugs


def _links(page: Path) -> list[str]:
    return _LINK.findall(_FENCE.sub("", page.read_text()))


def _broken(page: Path) -> list[str]:
    """The relative links of ``page`` whose file or heading does not exist."""
    broken = []
    for link in _links(page):
        if re.match(r"^[a-z]+://|^mailto:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no {target}")
        elif anchor and target.suffix == ".md" and anchor not in _slugs(target):
            broken.append(f"{link}: no heading #{anchor} in {target.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    assert not _broken(page), f"{page.relative_to(REPO)}:\n" + "\n".join(_broken(page))


def test_the_link_checker_catches_a_broken_link(tmp_path):
    (tmp_path / "other.md").write_text("## Overhead and scaling (`python -m x.y`)\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n[ok](#title) [bad](#nope) [gone](missing.md) "
        "[there](other.md#overhead-and-scaling-python--m-xy) [not](other.md#overhead)\n"
        "```\n[in a code block](nowhere.md)\n```\n"
    )
    assert [b.split(":")[0] for b in _broken(page)] == ["#nope", "missing.md", "other.md#overhead"]


def test_the_readme_is_a_front_page_that_links_every_topic():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert "<!-- test-command -->" in text and "<!-- quickstart -->" in text
    linked = {link.partition("#")[0] for link in _links(README)}
    for page in DOC_PAGES:
        assert (REPO / "docs" / page).is_file(), page
        assert f"docs/{page}" in linked, f"README.md does not link docs/{page}"


def _block(marker: str, text: str) -> str:
    match = re.search(rf"<!-- {marker} -->\n```\w*\n(.*?)\n```", text, re.S)
    assert match, f"no <!-- {marker} --> code block in README.md"
    return match.group(1)


def test_the_readme_minimal_job_file_is_valid():
    spec = job_from_dict(yaml.safe_load(_block("minimal-job", README.read_text())))
    assert spec.trainable.name == "quadratic" and spec.searcher.name == "bohb"
    assert spec.search_space["momentum"].when == {"optimizer": ["sgd"]}


def test_user_facing_text_has_no_workplace_paths():
    # The reference data beside the checkout is the build machines' affair
    # (docs/development.md), not a user's; recorded commands in the benchmark pages and
    # the README's headline table say which data directory produced their numbers.
    allowed = {"development.md", "benchmarks.md", "README.md"}
    for page in PAGES:
        if page.name not in allowed:
            assert "../shared" not in page.read_text(), page
    assert "build machines" not in README.read_text()
