"""The README stays short and every page's links and generated tables hold."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A markdown link or image: [text](target) or ![alt](target); the target up to a space or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")
# A commit hash: 7 to 40 hex digits, with at least one digit and one letter.
HASH = re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")


def _make_tables():
    spec = importlib.util.spec_from_file_location("make_tables", ROOT / "docs" / "make_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_at_most_300_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move the rest to docs/"


def test_readme_names_no_commit():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert not HASH.findall(readme), HASH.findall(readme)


def test_the_hash_pattern_finds_a_commit_and_nothing_else():
    assert HASH.findall("at `dde75cf`, 03288e8 and 575e4d57f466") == [
        "dde75cf",
        "03288e8",
        "575e4d57f466",
    ]
    assert not HASH.findall("crowd1000 yolox640 8400 abcdefa decade 2.13.0+cpu cu130")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files(page):
    missing = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0]
        if not path or re.match(r"[a-z][a-z0-9+.-]*:", path):  # an anchor here, or a URL
            continue
        if not (page.parent / path).exists():
            missing.append(target)
    assert not missing, f"{page.name} links to missing files: {missing}"


def test_generated_tables_are_up_to_date():
    problems = _make_tables().check()
    assert not problems, f"run python docs/make_tables.py: {problems}"


def test_the_check_fails_on_a_changed_number():
    make_tables = _make_tables()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = make_tables.BLOCK.search(readme)
    assert block, "the README has no generated block"
    number = re.search(r"\d+\.\d+ ms", block["body"])
    start = block.start("body") + number.start()
    changed = readme[:start] + "9" + readme[start + 1 :]
    if changed == readme:  # the digit was already a 9
        changed = readme[:start] + "8" + readme[start + 1 :]
    assert make_tables.stale(readme) == []
    assert make_tables.stale(changed) == [block["id"]]


def test_the_study_page_quotes_only_numbers_of_the_committed_report():
    page = (ROOT / "docs" / "study.md").read_text()
    results = page[page.index("<!-- study-results -->") : page.index("<!-- /study-results -->")]
    report = (ROOT / "docs" / "study_cpu" / "study.md").read_text()
    quoted = re.findall(r"\d+\.\d+", results)
    assert quoted, "the study's results quote no number"
    assert [n for n in quoted if n not in report] == []
