"""The repository address in one place (utils.course_links), rewritten into copies of notebooks and README."""

from __future__ import annotations

import shutil

import nbformat
import pytest

from utils import course_links
from utils.cli import main
from utils.config import PROJECT_ROOT, ConfigError
from utils.course_links import (
    REPO,
    badge_markdown,
    check_repo,
    colab_url,
    main_links,
    rewrite_badges,
    setup_cell_source,
)

OLD = "someone/old-course"
OLD_BADGE = (
    "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
    f"(https://colab.research.google.com/github/{OLD}/blob/main/notebooks/01_data.ipynb)"
)


def write_notebook(path, first_markdown: str, repo: str = OLD):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell(first_markdown),
        nbformat.v4.new_code_cell(setup_cell_source(repo)),
        nbformat.v4.new_markdown_cell("## Summary\n\nText.\n\n## Exercises\n\n1. Try it."),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path


@pytest.fixture
def course(tmp_path):
    """A copy of the course's link-bearing files pointing at an old address."""
    (tmp_path / "utils").mkdir()
    shutil.copy(PROJECT_ROOT / "utils" / "course_links.py", tmp_path / "utils" / "course_links.py")
    write_notebook(tmp_path / "notebooks" / "01_data.ipynb", f"# Data\n\n{OLD_BADGE}\n\nYou will learn ...")
    write_notebook(tmp_path / "notebooks" / "02_models.ipynb", "# Models\n\nYou will learn ...")  # no badge
    (tmp_path / "README.md").write_text(
        "# Course\n\n| notebook | open |\n|---|---|\n"
        f"| [01](notebooks/01_data.ipynb) | {OLD_BADGE} |\n"
        f"| [02](notebooks/02_models.ipynb) | [![Open In Colab](https://colab.research.google.com/assets/"
        f"colab-badge.svg)](https://colab.research.google.com/github/{OLD}/blob/dev/notebooks/02_models.ipynb) |\n\n"
        f"```bash\ngit clone https://github.com/{OLD}.git\n```\n\nSee https://github.com/other/project too.\n",
        encoding="utf-8",
    )
    return tmp_path


def test_urls_are_built_from_the_one_address():
    assert colab_url("notebooks/01_data.ipynb") == (
        f"https://colab.research.google.com/github/{REPO}/blob/main/notebooks/01_data.ipynb"
    )
    assert colab_url(PROJECT_ROOT / "notebooks" / "01_data.ipynb", "me/fork").endswith(
        "/github/me/fork/blob/main/notebooks/01_data.ipynb"
    )
    assert badge_markdown("notebooks/01_data.ipynb").endswith(f"({colab_url('notebooks/01_data.ipynb')})")
    assert f'"https://github.com/{REPO}", "cxr-course"' in setup_cell_source()


def test_check_repo_accepts_owner_name_and_rejects_the_rest():
    assert check_repo("me/fork") == "me/fork"
    assert check_repo("https://github.com/me/fork.git") == "me/fork"
    for bad in ("fork", "me/fork/extra", "me fork/x", ""):
        with pytest.raises(ConfigError, match="OWNER/NAME"):
            check_repo(bad)


def test_main_links_rewrites_every_place_and_is_idempotent(course, capsys):
    assert main_links("me/fork", root=course) == 0
    for name in ("01_data", "02_models"):
        notebook = nbformat.read(course / "notebooks" / f"{name}.ipynb", as_version=4)
        nbformat.validate(notebook)
        first, setup = notebook.cells[0].source, notebook.cells[1].source
        assert badge_markdown(f"notebooks/{name}.ipynb", "me/fork") in first
        assert first.count("colab-badge.svg") == 1 and OLD not in first
        assert setup == setup_cell_source("me/fork")
    assert (
        nbformat.read(course / "notebooks" / "02_models.ipynb", as_version=4)
        .cells[0]
        .source.startswith("# Models\n\n[![Open In Colab]")
    )  # a missing badge goes under the title
    readme = (course / "README.md").read_text()
    assert OLD not in readme
    assert colab_url("notebooks/01_data.ipynb", "me/fork") in readme
    assert colab_url("notebooks/02_models.ipynb", "me/fork") in readme  # branch set to main too
    assert "git clone https://github.com/me/fork\n" in readme
    assert "https://github.com/other/project" in readme  # unrelated links stay
    assert 'REPO = "me/fork"' in (course / "utils" / "course_links.py").read_text()
    assert "4 file(s) changed" in capsys.readouterr().out

    before = {p: p.read_bytes() for p in course.rglob("*") if p.is_file()}
    assert main_links("me/fork", root=course) == 0
    assert "0 file(s) changed" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in course.rglob("*") if p.is_file()} == before
    assert rewrite_badges(course, "me/fork") == []


def test_main_links_leaves_the_real_address_alone_for_a_copy(course):
    main_links("me/fork", root=course)
    assert course_links.REPO == REPO  # the running module only follows its own file


def test_cli_rejects_a_bad_address_in_one_line(capsys):
    assert main(["links", "--repo", "not a repo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "OWNER/NAME" in err and err.count("\n") == 1
