"""Every course notebook follows the course's shape: numbered, valid, titled with objectives and a time estimate,
the standard setup cell first, short code cells, Summary and Exercises at the end, committed without outputs,
listed in README.md with its Colab badge, and no broken relative link."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import nbformat
import pytest

from utils.config import PROJECT_ROOT
from utils.course_links import badge_markdown, colab_url, repo_url

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
README = PROJECT_ROOT / "README.md"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
NAME = re.compile(r"^(\d{2})_[a-z0-9]+(?:_[a-z0-9]+)*\.ipynb$")
MAX_CODE_LINES = 25
# [text](target) or ![alt](target "title"), and reference definitions "[label]: target"
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=\"([^\"]+)\"", re.IGNORECASE)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def relative_targets(markdown: str) -> list[str]:
    """Link targets in ``markdown`` that point at files of the repository (web links and anchors left out)."""
    markdown = FENCE.sub("", markdown)
    targets = [
        *INLINE_LINK.findall(markdown),
        *REFERENCE_LINK.findall(markdown),
        *HTML_LINK.findall(markdown),
    ]
    keep = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith(("#", "//")):
            continue  # http:, https:, mailto:, attachment:, data: ... and in-page anchors
        keep.append(unquote(target.split("#", 1)[0].split("?", 1)[0]))
    return [t for t in keep if t]


def broken_links(markdown: str, base: Path) -> list[str]:
    return [t for t in relative_targets(markdown) if not (base / t).exists()]


def test_there_are_notebooks():
    assert NOTEBOOKS, f"No notebooks found in {NOTEBOOK_DIR}: the course needs notebooks/01_*.ipynb onwards."


def test_notebooks_are_numbered_from_01_without_gaps():
    assert NOTEBOOKS, f"No notebooks found in {NOTEBOOK_DIR}."
    bad = [p.name for p in NOTEBOOKS if not NAME.match(p.name)]
    assert not bad, f"Notebook names must look like NN_lower_case_name.ipynb: {bad}"
    numbers = [int(NAME.match(p.name).group(1)) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(NOTEBOOKS) + 1)), (
        f"Numbers must run 01, 02, ... without gaps: {numbers}"
    )


def test_link_helpers_find_relative_targets_only(tmp_path):
    """The link finder itself: web links, anchors and code blocks are ignored; local targets are checked."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a b.md").write_text("x")
    markdown = (
        "[web](https://example.org/x.md) [mail](mailto:a@b.c) [top](#summary) [ok](docs/a%20b.md#part)\n"
        '![img](figures/missing.png "a title") <img src="gone.svg">\n[ref]: docs/nope.md\n'
        "```\n[in code](not/checked.md)\n```\n"
    )
    assert relative_targets(markdown) == ["docs/a b.md", "figures/missing.png", "docs/nope.md", "gone.svg"]
    assert broken_links(markdown, tmp_path) == ["figures/missing.png", "docs/nope.md", "gone.svg"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_valid_nbformat(path):
    nbformat.validate(read(path))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_first_cell_introduces_the_notebook(path):
    first = read(path).cells[0]
    assert first.cell_type == "markdown", "The first cell must be Markdown: title, badge, objectives, time."
    text = first.source
    assert re.search(r"^# \S", text, re.MULTILINE), "The first cell needs a '# Title' line."
    rel = path.relative_to(PROJECT_ROOT).as_posix()
    assert badge_markdown(rel) in text, (
        f"The first cell needs the Colab badge {badge_markdown(rel)} (run `python -m utils links`)."
    )
    assert re.search(r"you will learn|learning objectives", text, re.IGNORECASE), (
        "The first cell needs learning objectives ('You will learn' or 'Learning objectives')."
    )
    assert re.search(r"time:|minutes", text, re.IGNORECASE), (
        "The first cell needs a time estimate ('Time: ...')."
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_first_code_cell_is_the_standard_setup_cell(path):
    code = [c for c in read(path).cells if c.cell_type == "code"]
    assert code, "The notebook has no code cell."
    setup = code[0].source
    for piece in (
        "ROOT = next(",
        '(p / "utils" / "__init__.py").exists()',
        f'"{repo_url()}"',
        "sys.path.insert(0, str(ROOT))",
        "from utils.notebook import setup_notebook",
        "setup_notebook()",
    ):
        assert piece in setup, f"The first code cell must be the standard setup cell; it lacks {piece!r}."


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_ends_with_summary_and_exercises(path):
    cells = read(path).cells
    tail = []
    for cell in reversed(cells):
        if cell.cell_type != "markdown":
            break
        tail.append(cell.source)
    ending = "\n".join(tail)
    assert tail, "The notebook must end with Markdown cells holding the Summary and the Exercises."
    for section in ("Summary", "Exercises"):
        assert re.search(rf"^#+ .*\b{section}\b", ending, re.MULTILINE), (
            f"The closing Markdown cells (after the last code cell) need a '## {section}' heading."
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_committed_without_outputs(path):
    dirty = [
        i
        for i, c in enumerate(read(path).cells)
        if c.cell_type == "code" and (c.outputs or c.execution_count)
    ]
    assert not dirty, (
        f"Cells {dirty} have outputs or execution counts: clear them (nbstripout) before committing."
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_code_cells_are_short(path):
    long = {
        i: n
        for i, c in enumerate(read(path).cells)
        if c.cell_type == "code" and (n := len(c.source.strip("\n").splitlines())) > MAX_CODE_LINES
    }
    assert not long, (
        f"Code cells longer than {MAX_CODE_LINES} lines {{cell index: lines}}: {long}; move logic into utils/."
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_listed_in_the_readme_with_its_badge(path):
    assert README.exists(), "README.md is missing."
    text = README.read_text(encoding="utf-8")
    rel = path.relative_to(PROJECT_ROOT).as_posix()
    assert f"]({rel})" in text, f"README.md must link to {rel}."
    assert colab_url(rel) in text, (
        f"README.md must show the Colab badge of {rel} (run `python -m utils links`)."
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_relative_links_resolve(path):
    markdown = "\n".join(c.source for c in read(path).cells if c.cell_type == "markdown")
    broken = broken_links(markdown, path.parent)
    assert not broken, f"{path.name} links to files that do not exist: {broken}"


def test_readme_relative_links_resolve():
    assert README.exists(), "README.md is missing."
    broken = broken_links(README.read_text(encoding="utf-8"), README.parent)
    assert not broken, f"README.md links to files that do not exist: {broken}"
