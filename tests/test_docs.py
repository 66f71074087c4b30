"""The README stays short and every page's links and generated tables hold."""

import importlib
import importlib.util
import re
import shlex
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


@pytest.mark.parametrize(
    ("target", "crowded", "verdict"),
    [
        (0.99, 0.98, "not met"),  # a miss on BENCHMARKS.md's workloads, whatever the rest
        (1.0, 0.98, "met on its workloads; not on crowd1000"),
        (1.0, 1.0, "met"),
    ],
)
def test_the_agreement_verdict(monkeypatch, target, crowded, verdict):
    make_tables = _make_tables()
    agreement = {"yolox640": target, "crowd1000": crowded}
    rows = {(w, a): {"agreement": x} for w, x in agreement.items() for a in make_tables.NAMES}
    monkeypatch.setattr(make_tables, "with_loop", lambda names: rows)
    assert [row[2] for row in make_tables._agreement_rows()] == [verdict] * len(make_tables.NAMES)


def test_the_study_page_quotes_only_numbers_of_the_committed_report():
    page = (ROOT / "docs" / "study.md").read_text()
    results = page[page.index("<!-- study-results -->") : page.index("<!-- /study-results -->")]
    report = (ROOT / "docs" / "study_cpu" / "study.md").read_text()
    quoted = re.findall(r"\d+\.\d+", results)
    assert quoted, "the study's results quote no number"
    # Whole numbers of the report: "0.15" is not quoted from "10.15".
    assert [n for n in quoted if n not in re.findall(r"\d+\.\d+", report)] == []


def _source_commands():
    """``(report, command)`` for every report a generated block names, a shell loop over
    assigners expanded (``for a in ota simota; do ... $a ...; done``)."""
    make_tables = _make_tables()
    items = []
    for page in make_tables.PAGES:
        for block in make_tables.BLOCK.finditer((ROOT / page).read_text(encoding="utf-8")):
            for line in block["body"].splitlines():
                if match := re.match(r"- `benchmarks/results/(\S+)` .*: `(.+)`$", line):
                    items.append(match.groups())
    pairs = []
    for report, cmd in dict.fromkeys(items):
        loop = re.fullmatch(r"for a in ([\w ]+); do (.+); done", cmd)
        for a in loop[1].split() if loop else [None]:
            pairs.append(
                (report.replace("$a", a), loop[2].replace("$a", a)) if loop else (report, cmd)
            )
    return pairs


# The report a benchmark writes without --out (or the suite without --out-dir), in
# benchmarks/results/<device>/.
DEFAULT_REPORT = {
    "assign_bench": "assign.json",
    "bucket_ablation": "buckets.json",
    "compile_bench": "compile.json",
    "scaling": "scaling.json",
    "suite": "suite.json",
    "train_step_bench": "train_step.json",
}


def test_every_source_command_parses_and_writes_its_committed_report():
    make_tables = _make_tables()
    pairs = _source_commands()
    assert len(pairs) > 10, pairs
    for report, cmd in pairs:
        words = shlex.split(cmd)
        assert words[:2] == ["python", "-m"] and words[2].startswith("benchmarks."), cmd
        module = importlib.import_module(words[2])
        try:
            args = module.parse_args(words[3:])
        except SystemExit:
            pytest.fail(f"{report}: its command does not parse: {cmd}")
        committed = Path("benchmarks/results", report)
        name = words[2].removeprefix("benchmarks.")
        if getattr(args, "out", None):
            written = Path(args.out)
        elif getattr(args, "out_dir", None):
            written = Path(args.out_dir, DEFAULT_REPORT[name])
        else:  # the default: the folder of the device the report names
            device = make_tables.load(report).get("device_slug")
            written = Path("benchmarks/results", device, DEFAULT_REPORT[name])
        assert written == committed, f"{cmd} writes {written}, not {committed}"
        assert getattr(args, "markdown", None) is None, cmd
        if name == "bucket_ablation":  # XLA flags hold commas: the same variants
            rows = make_tables.load(report)["rows"]
            variants = list(dict.fromkeys(row["variant"] for row in rows))
            assert module.split_variants(args.variants) == variants, cmd
