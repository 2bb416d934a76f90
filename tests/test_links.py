"""The course's GitHub address and what is built from it (utils/course/links.py): Colab badges and clone URLs
rewritten for a fork, in notebooks, solutions, README.md (with the ``cd`` after ``git clone``) and CITATION.cff,
only where they point at a repository, and idempotently; no file of the project still names the old repository.
Every test works on copies in a temporary folder."""

from __future__ import annotations

import re
import shutil
import subprocess

import nbformat
import pytest

from utils.course import links
from utils.course.config import PROJECT_ROOT, ConfigError
from utils.course.links import (
    BADGE_IMAGE,
    REPO,
    badge_markdown,
    check_repo,
    colab_url,
    main_links,
    repo_url,
    rewrite_badges,
    rewrite_markdown,
    set_repo,
    setup_cell_source,
)

FORK = "my-org/cxr-fork"


@pytest.mark.parametrize("given", ["my-org/cxr-fork", " https://github.com/my-org/cxr-fork.git ", "my-org/cxr-fork/"])
def test_check_repo_accepts_owner_name_and_urls(given):
    assert check_repo(given) == FORK


@pytest.mark.parametrize("given", ["cxr-fork", "my org/cxr", "a/b/c", "https://gitlab.com/a/b", ""])
def test_check_repo_refuses_anything_else(given):
    with pytest.raises(ConfigError, match="is not a GitHub repository: give it as OWNER/NAME"):
        check_repo(given)


def test_urls_built_from_the_repository():
    assert repo_url(FORK) == "https://github.com/my-org/cxr-fork"
    assert repo_url() == f"https://github.com/{REPO}"
    url = "https://colab.research.google.com/github/my-org/cxr-fork/blob/main/notebooks/02_eda.ipynb"
    assert colab_url("notebooks/02_eda.ipynb", FORK) == url
    assert colab_url(PROJECT_ROOT / "notebooks" / "02_eda.ipynb", FORK) == url  # absolute paths made relative
    assert badge_markdown("notebooks/02_eda.ipynb", FORK) == f"[![Open In Colab]({BADGE_IMAGE})]({url})"
    assert f'"{repo_url(FORK)}"' in setup_cell_source(FORK) and repo_url("old/repo") not in setup_cell_source(FORK)
    assert setup_cell_source() == setup_cell_source(REPO)


def test_rewrite_markdown_changes_repository_links_only():
    text = (
        "Open [in Colab](https://colab.research.google.com/github/old/repo/blob/dev/notebooks/03_x.ipynb).\n"
        "    git clone https://github.com/old/repo.git\n"
        "See https://github.com/keras-team/keras for Keras.\n"
        "Data: https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia\n"
    )
    new = rewrite_markdown(text, FORK)
    assert new.splitlines() == [
        "Open [in Colab](https://colab.research.google.com/github/my-org/cxr-fork/blob/main/notebooks/03_x.ipynb).",
        "    git clone https://github.com/my-org/cxr-fork",
        "See https://github.com/keras-team/keras for Keras.",  # not a clone line: left alone
        "Data: https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia",
    ]
    assert rewrite_markdown(new, FORK) == new


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("git clone https://github.com/old/repo.git\ncd repo\n", "git clone https://github.com/my-org/cxr-fork\ncd cxr-fork\n"),
        ("    $ git clone https://github.com/old/repo\n    $ cd repo", "    $ git clone https://github.com/my-org/cxr-fork\n    $ cd cxr-fork"),
        ("git clone --depth 1 https://github.com/old/repo && cd repo", "git clone --depth 1 https://github.com/my-org/cxr-fork && cd cxr-fork"),
        ("git clone https://github.com/old/repo; cd repo", "git clone https://github.com/my-org/cxr-fork; cd cxr-fork"),
        ("`git clone https://github.com/old/repo && cd repo`", "`git clone https://github.com/my-org/cxr-fork && cd cxr-fork`"),
        ("Run `git clone https://github.com/old/repo`.", "Run `git clone https://github.com/my-org/cxr-fork`."),
        # a clone into a folder of one's choosing keeps that folder
        ("git clone https://github.com/old/repo course\ncd course", "git clone https://github.com/my-org/cxr-fork course\ncd course"),
        ("git clone https://github.com/old/repo\n\nThen cd notebooks", "git clone https://github.com/my-org/cxr-fork\n\nThen cd notebooks"),
    ],
)
def test_rewrite_markdown_cd_follows_the_cloned_folder(before, after):
    assert rewrite_markdown(before, FORK) == after
    assert rewrite_markdown(after, FORK) == after


@pytest.fixture
def course(tmp_path):
    """A copy of the course's link-bearing files, all pointing at old/repo (whatever this course's REPO, even in a
    fork called FORK): links.py, README.md, CITATION.cff, two notebooks (one without a badge) and a solution
    notebook (never a badge)."""
    root = tmp_path / "course"
    (root / "utils" / "course").mkdir(parents=True)
    source = (PROJECT_ROOT / "utils" / "course" / "links.py").read_text()
    (root / "utils" / "course" / "links.py").write_text(re.sub(r'^REPO = ".*"$', 'REPO = "old/repo"', source, count=1, flags=re.M))
    (root / "README.md").write_text(
        f"# Course\n\n{badge_markdown('notebooks/01_a.ipynb', 'old/repo')}\n\n```\ngit clone {repo_url('old/repo')}.git\ncd repo\n```\n"
    )
    (root / "notebooks").mkdir()
    for name, first in [("01_a.ipynb", f"# 01 · A\n\n{badge_markdown('notebooks/01_a.ipynb', 'old/repo')}\n\nText."),
                        ("02_b.ipynb", "# 02 · B\n\nNo badge yet.")]:  # fmt: skip
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell(first), nbformat.v4.new_code_cell(setup_cell_source("old/repo")),
                    nbformat.v4.new_code_cell("print('see https://github.com/x/y')")]  # fmt: skip
        nbformat.write(nb, root / "notebooks" / name)
    (root / "solutions").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 01 · Solutions\n\nOf [notebook 01](../notebooks/01_a.ipynb)."),
                nbformat.v4.new_code_cell(setup_cell_source("old/repo"))]  # fmt: skip
    nbformat.write(nb, root / "solutions" / "01_solutions.ipynb")
    (root / "CITATION.cff").write_text(CITATION.format(url=repo_url("old/repo")))
    return root


CITATION = """cff-version: 1.2.0
title: "A course"
repository-code: "{url}"
references:
  - type: software
    title: Keras
    repository-code: "https://github.com/keras-team/keras"
"""


def test_rewrite_badges_points_everything_at_the_fork_once(course):
    changed = rewrite_badges(course, FORK)
    assert sorted(p.relative_to(course).as_posix() for p in changed) == [
        "CITATION.cff", "README.md", "notebooks/01_a.ipynb", "notebooks/02_b.ipynb", "solutions/01_solutions.ipynb"
    ]  # fmt: skip
    for name in ("01_a", "02_b"):
        nb = nbformat.read(course / "notebooks" / f"{name}.ipynb", as_version=4)
        first = nb.cells[0].source
        assert first.count(BADGE_IMAGE) == 1
        assert badge_markdown(f"notebooks/{name}.ipynb", FORK) in first
        assert nb.cells[1].source == setup_cell_source(FORK)
        assert nb.cells[2].source == "print('see https://github.com/x/y')"  # not a clone: another repository
    added = nbformat.read(course / "notebooks" / "02_b.ipynb", as_version=4).cells[0].source
    assert added == f"# 02 · B\n\n{badge_markdown('notebooks/02_b.ipynb', FORK)}\n\nNo badge yet."  # under the title
    readme = (course / "README.md").read_text()
    assert colab_url("notebooks/01_a.ipynb", FORK) in readme and f"git clone {repo_url(FORK)}\n" in readme
    assert rewrite_badges(course, FORK) == []  # running it again changes nothing


def test_rewrite_badges_rewrites_the_solutions_setup_cell_without_a_badge(course):
    rewrite_badges(course, FORK)
    solution = nbformat.read(course / "solutions" / "01_solutions.ipynb", as_version=4)
    notebook = nbformat.read(course / "notebooks" / "01_a.ipynb", as_version=4)
    assert solution.cells[1].source == notebook.cells[1].source == setup_cell_source(FORK)
    assert solution.cells[0].source == "# 01 · Solutions\n\nOf [notebook 01](../notebooks/01_a.ipynb)."


def test_rewrite_badges_readme_cd_follows_the_fork_name(course):
    rewrite_badges(course, FORK)
    assert f"git clone {repo_url(FORK)}\ncd cxr-fork\n" in (course / "README.md").read_text()
    rewrite_badges(course, REPO)  # and back
    assert f"git clone {repo_url(REPO)}\ncd {REPO.split('/')[1]}\n" in (course / "README.md").read_text()


def test_rewrite_badges_points_the_citation_at_the_fork(course):
    rewrite_badges(course, FORK)
    assert (course / "CITATION.cff").read_text() == CITATION.format(url=repo_url(FORK))  # Keras' address kept


def test_set_repo_rewrites_only_the_repo_line(course):
    source = course / "utils" / "course" / "links.py"
    before = source.read_text()
    assert set_repo(FORK, course) is True
    after = source.read_text()
    assert f'REPO = "{FORK}"' in after and 'REPO = "old/repo"' not in after
    assert [a for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b] == ['REPO = "old/repo"']
    assert set_repo(FORK, course) is False
    assert links.REPO == REPO  # the running course's address is not changed by another folder's file


def test_set_repo_without_a_repo_line(course):
    source = course / "utils" / "course" / "links.py"
    source.write_text(source.read_text().replace("REPO = ", "REPOSITORY = ", 1))
    with pytest.raises(ConfigError, match='No line `REPO = "..."`'):
        set_repo(FORK, course)


def test_main_links_reports_what_it_changed(course, capsys):
    assert main_links(f"https://github.com/{FORK}.git", root=course) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["updated utils/course/links.py", "updated notebooks/01_a.ipynb", "updated notebooks/02_b.ipynb",
                   "updated solutions/01_solutions.ipynb", "updated README.md", "updated CITATION.cff",
                   f"links point at https://github.com/{FORK} (6 file(s) changed)"]  # fmt: skip
    with pytest.raises(ConfigError):
        main_links("not a repo", root=course)


def test_no_file_of_the_project_names_the_old_repository_after_a_fork(tmp_path):
    """The project's own files that name :data:`REPO` (git's list), copied and rewritten by ``links``: none names it
    any more, every setup cell is the fork's, and the README's ``cd`` goes into the folder its clone makes."""
    try:
        tracked = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    names = [name for name in tracked.decode().split("\0") if name and (PROJECT_ROOT / name).is_file()]
    naming = [n for n in names if REPO.encode() in (PROJECT_ROOT / n).read_bytes() and n != "tests/test_links.py"]
    assert "utils/course/links.py" in naming and "README.md" in naming
    for name in naming:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / name, tmp_path / name)
    other = "someone/elsewhere"
    main_links(other, root=tmp_path)
    still = [n for n in naming if REPO in (tmp_path / n).read_text(encoding="utf-8")]
    assert not still, f"`python -m utils links` leaves {REPO} in {still}: rewrite them in utils/course/links.py"
    setup_cells = {n: [c for c in nbformat.read(tmp_path / n, as_version=4).cells if c.cell_type == "code"][0].source
                   for n in naming if n.endswith(".ipynb")}  # fmt: skip
    assert setup_cells and set(setup_cells.values()) == {setup_cell_source(other)}
    pairs = re.findall(r"git clone \S*?([\w.-]+?)(?:\.git)?[ \t]*\n[ \t]*cd (\S+)", (tmp_path / "README.md").read_text())
    assert pairs and all(made == entered == "elsewhere" for made, entered in pairs), pairs
