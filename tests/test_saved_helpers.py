"""The d2l-style twins: a notebook code cell whose first line is ``# saved in utils/<module>.py`` holds the very
code of that module. Every top-level function, class and assignment of such a cell must equal (same AST) the
top-level node of the same name in the module, so a fix made on one side only is caught here."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import nbformat
import pytest

from utils.course.config import PROJECT_ROOT

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SAVED_LINE = re.compile(r"^#\s*saved in\s+(utils/[\w/]+\.py)\s*$")
# Notebooks that teach code the package keeps: each must hold at least one saved cell.
NOTEBOOKS_WITH_SAVED_CELLS = ("01", "03", "04", "05", "06", "07", "08", "09", "10", "11")
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)


@dataclass(frozen=True)
class SavedCell:
    notebook: str
    index: int  # the cell's index in the notebook
    module: str  # "utils/data.py"
    source: str

    @property
    def id(self) -> str:
        return f"{self.notebook}:cell{self.index}"


def python_source(cell_source: str) -> str:
    """The cell without IPython-only lines (``%magic``, ``!shell``), which are not Python."""
    return "\n".join(line for line in cell_source.splitlines() if not line.lstrip().startswith(("%", "!")))


def top_level(tree: ast.Module) -> dict[str, ast.AST]:
    """``{name: node}`` for every top-level def, class and assignment (each target of ``a = b = ...``)."""
    nodes: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            nodes[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        nodes[name.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            nodes[node.target.id] = node
    return nodes


def twin_problems(cell_source: str, module_source: str, where: str, module: str) -> list[str]:
    """One line per definition of the cell that is missing from the module or differs from the module's."""
    cell = ast.parse(python_source(cell_source))
    ours = top_level(cell)
    theirs = top_level(ast.parse(module_source))
    problems = []
    if not ours:
        problems.append(f"{where}: a '# saved in {module}' cell must define something (def, class or assignment)")
    for name, node in ours.items():
        if name not in theirs:
            problems.append(f"{where}: {name} is saved in {module} by the notebook but {module} has no top-level {name}")
        elif ast.dump(node) != ast.dump(theirs[name]):
            problems.append(f"{where}: {name} differs between the notebook and {module}; edit both copies the same way")
    return problems


def saved_cells(path: Path) -> list[SavedCell]:
    notebook = nbformat.read(path, as_version=4)
    cells = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        match = SAVED_LINE.match(cell.source.splitlines()[0].strip())
        if match:
            cells.append(SavedCell(path.name, index, match.group(1), cell.source))
    return cells


ALL_SAVED = [cell for path in NOTEBOOKS for cell in saved_cells(path)]


@cache
def module_source(module: str) -> str:
    return (PROJECT_ROOT / module).read_text(encoding="utf-8")


def test_there_are_saved_cells():
    assert len(ALL_SAVED) >= 10, f"Only {len(ALL_SAVED)} '# saved in utils/...' cells found in {len(NOTEBOOKS)} notebooks."


@pytest.mark.parametrize("number", NOTEBOOKS_WITH_SAVED_CELLS)
def test_teaching_notebook_saves_its_code(number):
    paths = [p for p in NOTEBOOKS if p.name.startswith(f"{number}_")]
    assert len(paths) == 1, f"Expected one notebook {number}_*.ipynb, found {[p.name for p in paths]}."
    assert saved_cells(paths[0]), f"{paths[0].name} has no '# saved in utils/<module>.py' cell."


@pytest.mark.parametrize("cell", ALL_SAVED, ids=[c.id for c in ALL_SAVED])
def test_saved_cell_equals_its_module(cell):
    path = PROJECT_ROOT / cell.module
    assert path.is_file(), f"{cell.notebook} cell {cell.index} is saved in {cell.module}, which does not exist."
    problems = twin_problems(cell.source, module_source(cell.module), f"{cell.notebook} cell {cell.index}", cell.module)
    assert not problems, "\n".join(problems)


# --- The comparison itself ---------------------------------------------------------------------------------------


def _mutate_first_number(source: str) -> tuple[str, str]:
    """The cell with its first numeric constant inside a definition changed, and the definition's name."""
    tree = ast.parse(python_source(source))
    for node in tree.body:
        if not isinstance(node, DEFINITIONS):
            continue
        for const in ast.walk(node):
            if isinstance(const, ast.Constant) and type(const.value) in (int, float):
                const.value = const.value + 1
                name = node.name if hasattr(node, "name") else next(iter(top_level(ast.Module([node], []))))
                return ast.unparse(tree), name
    raise AssertionError("no numeric constant found")


def test_comparison_reports_a_one_sided_edit():
    cell = next(c for c in ALL_SAVED if c.module == "utils/data.py")
    module = module_source(cell.module)
    assert twin_problems(cell.source, module, "here", cell.module) == []
    edited, name = _mutate_first_number(cell.source)
    problems = twin_problems(edited, module, "here", cell.module)
    assert problems == [f"here: {name} differs between the notebook and {cell.module}; edit both copies the same way"]


def test_comparison_reports_a_one_sided_edit_in_every_saved_module():
    """The same for one cell of each module saved from a notebook (its first cell with a number): none escapes the
    AST comparison."""
    for module in sorted({c.module for c in ALL_SAVED}):
        for cell in (c for c in ALL_SAVED if c.module == module):
            try:
                edited, name = _mutate_first_number(cell.source)
                break
            except AssertionError:
                continue  # a cell of string constants only: the next one
        else:
            pytest.fail(f"{module}: no saved cell holds a number to edit")
        problems = twin_problems(edited, module_source(module), cell.id, module)
        assert any(name in p and "differs" in p for p in problems), (module, problems)


def test_comparison_reports_a_name_missing_from_the_module():
    source = "# saved in utils/data.py\ndef load_image_fast(path):\n    return path\n"
    problems = twin_problems(source, module_source("utils/data.py"), "nb cell 3", "utils/data.py")
    assert problems == ["nb cell 3: load_image_fast is saved in utils/data.py by the notebook but utils/data.py "
                        "has no top-level load_image_fast"]


def test_comparison_sees_decorators_docstrings_and_assignments():
    module = '@dataclass\nclass A:\n    """Doc."""\n    x: int\n\nLIMIT = 3\n'
    assert twin_problems(module, module, "w", "m") == []
    assert len(twin_problems(module.replace("@dataclass\n", ""), module, "w", "m")) == 1
    assert len(twin_problems(module.replace("Doc.", "Docs."), module, "w", "m")) == 1
    assert twin_problems(module.replace("LIMIT = 3", "LIMIT = 4"), module, "w", "m") == [
        "w: LIMIT differs between the notebook and m; edit both copies the same way"
    ]


def test_ipython_lines_are_skipped():
    source = "# saved in utils/x.py\n%matplotlib inline\n!pip install -q thing\ndef f():\n    return 1\n"
    assert twin_problems(source, "def f():\n    return 1\n", "w", "utils/x.py") == []
    assert len(twin_problems(source, "def f():\n    return 2\n", "w", "utils/x.py")) == 1


def test_saved_line_pattern():
    assert SAVED_LINE.match("# saved in utils/course/manifest.py").group(1) == "utils/course/manifest.py"
    assert SAVED_LINE.match("# saved in utils/data.py").group(1) == "utils/data.py"
    assert SAVED_LINE.match("# not saved in utils/data.py") is None


# --- The other direction: what the package marks as saved from a notebook is in one ------------------------------

MARK = re.compile(r"^# saved in (utils/[\w/]+\.py)\s*$")


def marked_definitions() -> list[tuple[str, str]]:
    """``(module, name)`` of every top-level definition preceded by a ``# saved in <that module>`` comment."""
    found = []
    for path in sorted((PROJECT_ROOT / "utils").rglob("*.py")):
        module = path.relative_to(PROJECT_ROOT).as_posix()
        lines = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines))
        starts = {}
        for node in tree.body:
            first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
            for name in top_level(ast.Module([node], [])):
                starts[name] = first
        for name, line in starts.items():
            match = MARK.match(lines[line - 2]) if line >= 2 else None
            if match:
                assert match.group(1) == module, f"{module}:{line - 1} says '# saved in {match.group(1)}'"
                found.append((module, name))
    return found


MARKED = marked_definitions()


def test_the_package_marks_its_saved_code():
    assert {m for m, _ in MARKED} >= {"utils/data.py", "utils/models.py", "utils/training.py", "utils/metrics.py"}


@pytest.mark.parametrize(("module", "name"), MARKED, ids=[f"{m}:{n}" for m, n in MARKED])
def test_marked_definition_has_a_notebook_twin(module, name):
    saved = {n for c in ALL_SAVED if c.module == module for n in top_level(ast.parse(python_source(c.source)))}
    assert name in saved, f"{module} marks {name} '# saved in {module}', but no notebook cell saves it."
