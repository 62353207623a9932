"""The README stands alone and short; every link and command in it and in docs/ points at something real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from suite.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_MAX_LINES = 160
# Pages written on other branches at the same time; the README's index links them before they land. A link
# to one of these is skipped while the file is absent, checked like any other once it exists.
PENDING_PAGES = {"docs/report.md", "docs/threat-model.md", "docs/methods-fp4.md", "docs/cluster.md"}
# The one path outside the repository the documentation may name: an optional offline CIFAR-10 source.
OUTSIDE_ALLOWED = {"../shared/datasets/make_cifar10.py"}

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`([^`]+)`")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
# A path token that climbs out of its folder: ../x/y, ../../x
UP_PATH = re.compile(r"(?<![\w./])((?:\.\./)+[\w.\-/]*)")


def documents() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def code_spans(text: str) -> list[str]:
    """Fenced blocks and inline code, the places commands are written."""
    fenced = FENCE.findall(text)
    return fenced + INLINE_CODE.findall(FENCE.sub("", text))


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors: lower case, backticks and punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower().replace("`", "")
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_docs_folder_exists_with_pages():
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert {"method.md", "training.md", "statistics.md", "reports.md"} <= pages


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path):
    text = FENCE.sub("", doc.read_text())
    bad = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not files
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        relative = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
        if not path.exists():
            if relative not in PENDING_PAGES:
                bad.append(f"{target}: no such file")
            continue
        if anchor and path.suffix == ".md" and anchor not in heading_anchors(path):
            bad.append(f"{target}: no heading #{anchor} in {relative}")
    assert not bad, f"{doc.relative_to(ROOT)}: " + "; ".join(bad)


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_outside_the_repository(doc: Path):
    """A clone has only the repository: links resolve from the page, paths in code or prose from the root
    (where commands run). Only the optional offline data source may lie outside."""
    text = doc.read_text()
    assert "paper-spec" not in text and "ecosystem-notes" not in text
    outside = []
    for target in LINK.findall(text):
        linked = (doc.parent / target.partition("#")[0]).resolve()
        if not re.match(r"[a-z]+:", target) and not linked.is_relative_to(ROOT):
            outside.append(target)
    for token in UP_PATH.findall(LINK.sub("", text)):
        if not (ROOT / token).resolve().is_relative_to(ROOT) and token not in OUTSIDE_ALLOWED:
            outside.append(token)
    assert not outside, f"{doc.relative_to(ROOT)} names files outside the repository: {outside}"


# Source paths written as code (`suite/atomic.py`, `hardware_profiles/*.toml`, `tools/gpu_evidence.sh`); output
# folders under reports/ are made by the commands, so they are not looked for.
SOURCE_PATH = re.compile(r"^(?:suite|tools|tests|docs|\.ci)/[\w.\-/*]*$")


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_source_paths_exist(doc: Path):
    """A page that names a module, tool or test names one that exists (a glob must match something)."""
    missing = [token for token in INLINE_CODE.findall(FENCE.sub("", doc.read_text()))
               if SOURCE_PATH.match(token) and not list(ROOT.glob(token.rstrip("/")))]
    assert not missing, f"{doc.relative_to(ROOT)} names source paths that do not exist: {missing}"


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_make_targets_exist(doc: Path):
    named = {t for span in code_spans(doc.read_text()) for t in re.findall(r"\bmake ([a-z][\w-]*)", span)}
    missing = named - makefile_targets()
    assert not missing, f"{doc.relative_to(ROOT)} names make targets the Makefile lacks: {sorted(missing)}"


def subcommand_options() -> dict[str, set[str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return {name: set(p._option_string_actions) for name, p in sub.choices.items()}


# `q4bench SUB ...`, `python -m suite SUB ...`, `torchrun ... -m suite SUB ...`: the command and what follows it.
COMMAND = re.compile(r"(?:\bq4bench|-m suite) ([a-z][\w-]*)([^\n`]*(?:\n[^\n`]*)*)")


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_commands_and_options_exist(doc: Path):
    """Every q4bench subcommand written as code, and every --option written after it, is one the CLI has."""
    known = subcommand_options()
    bad, seen = [], 0
    for span in code_spans(doc.read_text()):
        for line in span.split("\n") if span.startswith("```") else [span]:
            for name, rest in COMMAND.findall(line):
                seen += 1
                if name not in known:
                    bad.append(f"q4bench {name}: no such subcommand")
                    continue
                bad += [f"q4bench {name} {opt}" for opt in re.findall(r"(?<![\w-])--[a-z][\w-]*", rest)
                        if opt not in known[name]]
    assert not bad, f"{doc.relative_to(ROOT)}: unknown " + "; ".join(bad)


def test_the_command_check_sees_commands():
    """The README shows the commands it promises (so the option check above is not vacuous)."""
    spans = " ".join(code_spans(README.read_text()))
    for command in ("make bench", "make test", "make test-slow", "make test-isa", "make report", "make parity",
                    "q4bench submit"):
        assert command in spans, f"README.md no longer shows `{command}`"
    training = " ".join(code_spans((ROOT / "docs" / "training.md").read_text()))
    assert COMMAND.search(training) and "--recipe paper" in training


def test_checker_catches_a_bad_option_and_a_dangling_link(tmp_path):
    """The checks fail on what they exist to catch."""
    known = subcommand_options()
    name, rest = COMMAND.findall("q4bench train --no-such-flag --epochs 1")[0]
    assert [o for o in re.findall(r"(?<![\w-])--[a-z][\w-]*", rest) if o not in known[name]] == ["--no-such-flag"]
    assert UP_PATH.findall("see ../shared/docs/x.md") == ["../shared/docs/x.md"]
    assert not (ROOT / "../shared/docs/x.md").resolve().is_relative_to(ROOT)
    page = tmp_path / "p.md"
    page.write_text("# A title: `x`\n")
    assert heading_anchors(page) == {"a-title-x"}
