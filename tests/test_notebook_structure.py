"""Every course notebook has the course's shape: numbered, valid, committed without outputs, a first Markdown
cell with title, badge, objectives and time, the standard setup cell first among the code cells, explained and
short code cells, Summary and Exercises at the end, listed in README.md, and no broken relative link."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import nbformat
import pytest

from utils.course.config import PROJECT_ROOT
from utils.course.links import badge_markdown, colab_url, setup_cell_source

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
README = PROJECT_ROOT / "README.md"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
NAME = re.compile(r"^(\d{2})_[a-z0-9]+(?:_[a-z0-9]+)*\.ipynb$")
SETUP_LINES = 8
MAX_CODE_LINES = 25  # a cell saved into utils/ may be longer: it is one whole function
# At most this many code cells in a row without a Markdown cell between them. The course's aim is 1 (every code
# cell right after its explanation); the notebooks of the redesign still have pairs and triples (a saved
# function, then the cell that uses it): lower this as they are split.
MAX_CODE_RUN = 3
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=\"([^\"]+)\"", re.IGNORECASE)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def _ids(paths: list[Path]) -> list[str]:
    return [p.name[:2] for p in paths]


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(path: Path) -> list[nbformat.NotebookNode]:
    return [c for c in read(path).cells if c.cell_type == "code"]


def relative_targets(markdown: str) -> list[str]:
    """Link targets in ``markdown`` that point at files of the repository (web links and anchors left out)."""
    markdown = FENCE.sub("", markdown)
    targets = [*INLINE_LINK.findall(markdown), *REFERENCE_LINK.findall(markdown), *HTML_LINK.findall(markdown)]
    keep = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith(("#", "//")):
            continue  # http:, https:, mailto:, data: ... and in-page anchors
        keep.append(unquote(target.split("#", 1)[0].split("?", 1)[0]))
    return [t for t in keep if t]


def broken_links(markdown: str, base: Path) -> list[str]:
    return [t for t in relative_targets(markdown) if not (base / t).exists()]


def test_notebooks_are_numbered_from_01_without_gaps():
    assert len(NOTEBOOKS) >= 10, f"Expected the course's notebooks 01-10 in {NOTEBOOK_DIR}, found {len(NOTEBOOKS)}."
    bad = [p.name for p in NOTEBOOKS if not NAME.match(p.name)]
    assert not bad, f"Notebook names must look like NN_lower_case_name.ipynb: {bad}"
    numbers = [int(NAME.match(p.name).group(1)) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(NOTEBOOKS) + 1)), f"Numbers must run 01, 02, ... without gaps: {numbers}"


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


def test_setup_cell_source_is_short_and_valid_python():
    source = setup_cell_source()
    assert len(source.splitlines()) <= SETUP_LINES
    compile(source, "setup cell", "exec")
    assert source.splitlines()[-1] == "ctx = setup_notebook()"
    assert "from utils.course.notebook import setup_notebook" in source
    assert setup_cell_source("someone/fork") != source and "https://github.com/someone/fork" in setup_cell_source("someone/fork")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_valid_and_committed_without_outputs(path):
    notebook = read(path)
    nbformat.validate(notebook)
    dirty = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"Cells {dirty} have outputs or execution counts: clear them before committing."


@pytest.mark.parametrize("path", [*NOTEBOOKS, *sorted((PROJECT_ROOT / "solutions").glob("*.ipynb"))],
                         ids=lambda p: f"{p.parent.name}/{p.name[:2]}")  # fmt: skip
def test_every_cell_has_its_own_id(path):
    """nbformat 4.5 cells carry an ``id``; read through nbformat a missing one is made up with a
    MissingIDFieldWarning (a hard error in future versions), so the committed file itself is checked."""
    raw = json.loads(path.read_text())
    ids = [cell.get("id") for cell in raw["cells"]]
    missing = [i for i, cell_id in enumerate(ids) if not cell_id]
    assert (raw["nbformat"], raw["nbformat_minor"]) >= (4, 5), f"{path.name}: nbformat {raw['nbformat']}.{raw['nbformat_minor']}"
    assert not missing, f"{path.name}: cells {missing} have no id (nbformat.validator.normalize adds them)"
    assert len(set(ids)) == len(ids), f"{path.name}: cell ids repeat"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_first_cell_introduces_the_notebook(path):
    first = read(path).cells[0]
    assert first.cell_type == "markdown", "The first cell must be Markdown: title, badge, objectives, time."
    text = first.source
    number = path.name[:2]
    assert re.match(rf"# {number} · \S", text), f"The first line must be the title '# {number} · ...'."
    rel = path.relative_to(PROJECT_ROOT).as_posix()
    assert badge_markdown(rel) in text, f"The first cell needs the Colab badge {badge_markdown(rel)} (`python -m utils links`)."
    assert re.search(r"^\*\*You will learn\*\*\s*\n- ", text, re.MULTILINE), (
        "The first cell needs '**You will learn**' followed by a list of objectives."
    )
    assert re.search(r"^\*\*Time:\*\* .*\b(minutes?|seconds?|hours?)\b", text, re.MULTILINE), (
        "The first cell needs a time estimate: '**Time:** about N minutes ...'."
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_first_code_cell_is_the_standard_setup_cell(path):
    code = code_cells(path)
    assert code, "The notebook has no code cell."
    assert code[0].source == setup_cell_source(), (
        "The first code cell must be exactly utils.course.links.setup_cell_source() (`python -m utils links`)."
    )


def test_setup_cells_are_identical_across_notebooks():
    sources = {p.name: code_cells(p)[0].source for p in NOTEBOOKS}
    assert len(set(sources.values())) == 1, f"Setup cells differ: {sorted(sources)}"
    assert len(next(iter(sources.values())).splitlines()) <= SETUP_LINES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_code_cells_are_explained_and_short(path):
    cells = read(path).cells
    run, runs = 0, {}
    for index, cell in enumerate(cells):
        run = run + 1 if cell.cell_type == "code" else 0
        if run > MAX_CODE_RUN:
            runs[index] = run
    assert not runs, f"Code cells {sorted(runs)} follow {MAX_CODE_RUN} or more code cells without a Markdown cell."
    long = {i: n for i, c in enumerate(cells) if c.cell_type == "code" and not c.source.startswith("# saved in")
            and (n := len(c.source.strip("\n").splitlines())) > MAX_CODE_LINES}  # fmt: skip
    assert not long, f"Code cells longer than {MAX_CODE_LINES} lines {{cell: lines}}: {long}; move logic into utils/."
    empty = [i for i, c in enumerate(cells) if not c.source.strip()]
    assert not empty, f"Empty cells {empty}: delete them."


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_ends_with_summary_and_exercises(path):
    cells = read(path).cells
    tail = []
    for cell in reversed(cells):
        if cell.cell_type != "markdown":
            break
        tail.insert(0, cell.source)
    ending = "\n".join(tail)
    assert tail, "The notebook must end with Markdown cells holding the Summary and the Exercises."
    summary = re.search(r"^## Summary\s*$", ending, re.MULTILINE)
    exercises = re.search(r"^## Exercises\s*$", ending, re.MULTILINE)
    assert summary and exercises, "The closing Markdown (after the last code cell) needs '## Summary' and '## Exercises'."
    assert summary.start() < exercises.start(), "Summary comes before Exercises."
    assert re.search(r"^1\. \S", ending[exercises.end():], re.MULTILINE), "Exercises must be a numbered list."


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_listed_in_the_readme_with_its_badge(path):
    text = README.read_text(encoding="utf-8")
    rel = path.relative_to(PROJECT_ROOT).as_posix()
    assert f"]({rel})" in text, f"README.md must link to {rel}."
    assert colab_url(rel) in text, f"README.md must show the Colab badge of {rel} (run `python -m utils links`)."


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_relative_links_resolve(path):
    markdown = "\n".join(c.source for c in read(path).cells if c.cell_type == "markdown")
    broken = broken_links(markdown, path.parent)
    assert not broken, f"{path.name} links to files that do not exist: {broken}"


DOCS = [README, *sorted(p for p in PROJECT_ROOT.glob("*/*.md") if p.parent.name not in {"outputs", ".venv"})]


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*$", FENCE.sub("", markdown), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def broken_anchors(markdown: str, path: Path) -> list[str]:
    """Links to ``#anchor`` or ``other.md#anchor`` whose document has no such heading."""
    broken = []
    for target in INLINE_LINK.findall(FENCE.sub("", markdown)):
        file, _, anchor = target.partition("#")
        document = path.parent / unquote(file)
        if file and (document.suffix != ".md" or not document.is_file()):
            continue  # a web link or another kind of file: broken_links checks that files exist
        if anchor and anchor not in heading_anchors(document.read_text(encoding="utf-8") if file else markdown):
            broken.append(target)
    return broken


def test_anchor_helpers_follow_github_headings(tmp_path):
    (tmp_path / "other.md").write_text("# Results in detail\n\n## Three classes: levers\n")
    page = tmp_path / "page.md"
    markdown = "## The CNN's recipe\n[a](#the-cnns-recipe) [b](other.md#three-classes-levers) [c](other.md#results)\n[d](#gone)"
    assert heading_anchors(markdown) == {"the-cnns-recipe"}
    assert broken_anchors(markdown, page) == ["other.md#results", "#gone"]


def test_the_docs_include_the_readme_and_the_detailed_results():
    assert {README, PROJECT_ROOT / "benchmarks" / "RESULTS.md"} <= set(DOCS)


@pytest.mark.parametrize("path", DOCS, ids=[p.relative_to(PROJECT_ROOT).as_posix() for p in DOCS])
def test_doc_links_resolve_to_files_and_headings(path):
    markdown = path.read_text(encoding="utf-8")
    files, headings = broken_links(markdown, path.parent), broken_anchors(markdown, path)
    assert not files, f"{path.name} links to files that do not exist: {files}"
    assert not headings, f"{path.name} links to headings that do not exist: {headings}"


SOLUTIONS = PROJECT_ROOT / "solutions"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_every_exercise_has_a_tested_solution(path):
    """solutions/NN_solutions.ipynb links its notebook, starts with the same setup cell, answers each exercise
    (one markdown cell restating it, in order), and carries no outputs (nbval runs it in `make test`)."""
    solution = SOLUTIONS / f"{path.name[:2]}_solutions.ipynb"
    assert solution.is_file(), f"{solution.relative_to(PROJECT_ROOT)} is missing: write the exercises' solutions."
    cells = nbformat.read(solution, as_version=4).cells
    assert f"../notebooks/{path.name}" in cells[0].source
    assert code_cells(solution)[0].source == setup_cell_source()
    exercises = re.findall(r"^(\d+)\. ", nbformat.read(path, as_version=4).cells[-1].source.split("## Exercises")[-1], re.M)
    answered = [m.group(1) for c in cells if c.cell_type == "markdown" for m in [re.match(r"## Exercise (\d+)\b", c.source)] if m]
    assert answered == exercises, f"{solution.name} answers exercises {answered}, the notebook asks {exercises}"
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in cells if c.cell_type == "code")


def test_notebook_09_chooses_everything_on_validation_before_it_opens_test():
    """The model, its runner-up (for McNemar), the threshold and the temperature come from validation
    predictions; the first cell that reads test predictions comes after all of them, and nothing is chosen later."""
    code = [c.source for c in code_cells(NOTEBOOK_DIR / "09_evaluation.ipynb")]
    first_test = next(i for i, s in enumerate(code) if 'arrays("test")' in s)
    chosen = {name: next(i for i, s in enumerate(code) if re.search(rf"^{name} = ", s, re.M))
              for name in ("validation", "best, runner_up", "threshold", "temperature")}  # fmt: skip
    assert 'shared_predictions(runs, "val")' in code[chosen["validation"]]
    assert not re.search(r"['\"]test['\"]", code[chosen["validation"]])
    assert "validation" in code[chosen["best, runner_up"]]
    assert "y_val, p_val" in code[chosen["threshold"]] and "y_val, p_val" in code[chosen["temperature"]]
    assert max(chosen.values()) < first_test, f"cells {chosen} must all come before the first test cell {first_test}"
    later = "\n".join(code[first_test:])
    assert not re.search(r"choose_threshold\(|fit_temperature\(|sort_values\(", later), "something is chosen on test"


def nbval_chain(makefile: str) -> tuple[list[str], dict[str, tuple[list[str], list[str]]]]:
    """The Makefile's ``notebooks`` goals and its nbval targets: ``{target: (prerequisites, lesson numbers)}``."""
    goals = re.search(r"^notebooks:.*\n\t.*--output-sync=target ([\w -]+)$", makefile, re.M)
    targets = re.findall(r"^(nbval-[\w-]+):([^\n]*)\n\t\$\(NBVAL\) \$\(call lesson,([\d ]+)\)$", makefile, re.M)
    return (goals.group(1).split() if goals else []), {t: (pre.split(), nums.split()) for t, pre, nums in targets}


def test_make_notebooks_runs_every_lesson_once_after_the_lessons_it_reads():
    """`make notebooks` runs nbval in two lanes: every notebook and its solutions exactly once, each lesson after
    01 (which prepares the data), and 09-11 only after every run of 04-08 has been trained."""
    makefile = (PROJECT_ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^lesson += \$\(foreach n,\$\(1\),notebooks/\$\(n\)_\*\.ipynb solutions/\$\(n\)_solutions\.ipynb\)$",
                     makefile, re.M), "each lesson runs its notebook, then its solutions"  # fmt: skip
    goals, chain = nbval_chain(makefile)
    assert goals and set(goals) <= set(chain)
    lessons = sorted(n for _, numbers in chain.values() for n in numbers)
    assert lessons == [p.name[:2] for p in NOTEBOOKS], "every notebook once, none missing"

    def upstream(target: str) -> set[str]:
        return {t for pre in chain[target][0] for t in {pre} | upstream(pre)}

    reached = set(goals).union(*(upstream(goal) for goal in goals))
    assert reached == set(chain), f"targets that `make notebooks` never runs: {set(chain) - reached}"
    for target, (_, numbers) in chain.items():
        before = {n for t in upstream(target) for n in chain[t][1]}
        if numbers != ["01"]:
            assert "01" in before, f"{target} runs before notebook 01 has prepared the data"
        if max(numbers) >= "09":
            assert {"04", "05", "06", "07", "08"} <= before, f"{target} reads runs that may not exist yet"
