"""Every repository path that the documentation, the recipes and the scripts name exists.

What is checked, and where:

- markdown files (README.md, docs/**, experiments/**, benchmarks/*.md): every link `[text](target)`
  or image that is not a URL, resolved from the file's own folder as a markdown renderer does; with
  `#anchor` (in another markdown file or the same one), that heading must exist too. And every
  path inside backticks (inline code and fenced blocks) that starts with one of ROOTS below,
  resolved from the repository root;
- recipes and scripts (configs/, experiments/configs/, scripts/, experiments/scripts/, Makefile):
  every path in the whole text that starts with one of ROOTS.

What does not count, because it is not meant to exist in a fresh checkout:

- URLs, and paths outside ROOTS (runs/, demo-report/, /tmp/, plain file names);
- placeholders and globs: a path with `*`, `?`, `$`, `{`, `<`, `...` or an all-capitals part
  other than README (`DIR`, `OUT`, `NAME.yaml`);
- outputs: a path right after `--out`, `--json`, `--plot`, `>`, `>>`, `tee` or `mkdir -p`, which
  the command itself creates (data made by `upo data make --out data/...`, result tables), and
  every other mention of such a path in the same file (a recipe that says how to make its data);
- data/text/, where the user puts the text benchmarks they download. Other data/ paths count:
  the puzzle files the recipes read are committed.

A policy written as `DIR@T` (sampled at temperature T) is checked as DIR.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOTS = ("configs", "scripts", "docs", "experiments", "checkpoints", "benchmarks", "data")
MARKDOWN = ("README.md", "docs/**/*.md", "experiments/**/*.md", "benchmarks/*.md")
CODE = (
    "Makefile",
    "configs/*.yaml",
    "experiments/configs/*.yaml",
    "scripts/*.sh",
    "scripts/*.py",
    "experiments/scripts/*.sh",
    "experiments/scripts/*.py",
)
NOT_CHECKED = ("data/text/",)

PATH = re.compile(r"(?<![\w./$@-])(?:" + "|".join(ROOTS) + r")/[\w./*?{}$<>@+-]*")
OUTPUT_BEFORE = re.compile(r"(?:--out|--json|--plot|>>?|\btee|\bmkdir -p)[ =]+$")
PLACEHOLDER = re.compile(r"[*?${}<>]|\.\.\.|(?:^|/)(?!README\.)[A-Z][A-Z0-9_]+(?:/|$|\.)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE = re.compile(r"`([^`]+)`")


def paths_in(text: str) -> list[str]:
    """Repository paths named in a piece of code or text, with outputs (and any other mention of a
    path the same text makes), placeholders and data/text/ left out; trailing punctuation and a
    policy's `@T` are stripped."""
    named, made = [], set()
    for m in PATH.finditer(text):
        path = m.group(0).split("@")[0].rstrip(".:,")
        if PLACEHOLDER.search(path) or path.startswith(NOT_CHECKED):
            continue
        if OUTPUT_BEFORE.search(text[max(0, m.start() - 12) : m.start()]):
            made.add(path)
        else:
            named.append(path)
    return [p for p in named if p not in made]


def slug(heading: str) -> str:
    """The anchor GitHub gives a markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: Path) -> set[str]:
    text = FENCE.sub("", markdown.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.+?)\s*#*$", text, re.M)}


def missing_in_markdown(path: Path, root: Path = ROOT) -> list[str]:
    """The links and backticked paths of one markdown file that name nothing in `root`."""
    text = path.read_text()
    missing = []
    for m in LINK.finditer(text):
        target = m.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # a URL
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists() or (
            anchor and resolved.suffix == ".md" and anchor not in anchors(resolved)
        ):
            missing.append(target)
    code = [m.group(0) for m in FENCE.finditer(text)]
    code += [m.group(1) for m in INLINE.finditer(FENCE.sub("", text))]
    return missing + [p for p in paths_in("\n".join(code)) if not (root / p).exists()]


def missing_in_code(path: Path, root: Path = ROOT) -> list[str]:
    """The repository paths a recipe or script names that do not exist in `root`."""
    return [p for p in paths_in(path.read_text()) if not (root / p).exists()]


def files(patterns: tuple[str, ...]) -> list[Path]:
    return sorted({p for pattern in patterns for p in ROOT.glob(pattern) if p.is_file()})


@pytest.mark.parametrize("path", files(MARKDOWN), ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_names_only_existing_paths(path):
    assert missing_in_markdown(path) == []


@pytest.mark.parametrize("path", files(CODE), ids=lambda p: str(p.relative_to(ROOT)))
def test_recipes_and_scripts_name_only_existing_paths(path):
    assert missing_in_code(path) == []


def test_the_checks_can_fail(tmp_path):
    """A broken link, a broken anchor and a missing backticked path are caught; URLs, outputs,
    placeholders and paths outside ROOTS are not."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "real.yaml").write_text("task: sudoku4\n")
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## Real heading\n")
    doc = tmp_path / "docs" / "index.md"
    doc.write_text(
        "# Index\n\nSee [the page](page.md), [its heading](page.md#real-heading), [a gone page](gone.md),\n"
        "[a gone heading](page.md#gone-heading), [up](#index), [nowhere](#nowhere), ![a plot](gone.png)\n"
        "and https://example.org, [web](https://x.org).\n"
        "Run `upo mdm train --config configs/real.yaml --out checkpoints/new-mdm` and\n"
        "`upo policy train --config configs/gone.yaml --out runs/x`; see `runs/y`, `configs/DIR`,\n"
        "`configs/*.yaml`, `configs/NAME.yaml`, `checkpoints/real@1` and `docs/README.md`.\n"
        "```\nbash scripts/gone.sh > docs/made-here.md\n```\n"
    )
    assert missing_in_markdown(doc, tmp_path) == [
        "gone.md",
        "page.md#gone-heading",
        "#nowhere",
        "gone.png",
        "scripts/gone.sh",
        "configs/gone.yaml",
        "checkpoints/real",
        "docs/README.md",
    ]
    script = tmp_path / "configs" / "script.sh"
    script.write_text(
        "# reads configs/real.yaml and docs/gone.md\nX=docs/page.md\n"
        "upo eval --json docs/out.json --data data/text/gsm8k.jsonl --mdm $X/checkpoints/m\n"
        "# train_data: data/made.jsonl, from upo data make --out data/made.jsonl\n"
    )
    assert missing_in_code(script, tmp_path) == ["docs/gone.md"]
    script.write_text("train_data: data/made.jsonl\n")
    assert missing_in_code(script, tmp_path) == ["data/made.jsonl"]
