"""The course's GitHub address and what is built from it (utils/course/links.py): Colab badges and clone URLs
rewritten for a fork, in notebooks and README.md, only where they point at a repository, and idempotently. Every
test works on copies in a temporary folder."""

from __future__ import annotations

import shutil

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
    assert f'"{repo_url(FORK)}"' in setup_cell_source(FORK) and repo_url() not in setup_cell_source(FORK)


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


@pytest.fixture
def course(tmp_path):
    """A copy of the course's link-bearing files: links.py, README.md, and two notebooks, one without a badge."""
    root = tmp_path / "course"
    (root / "utils" / "course").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "utils" / "course" / "links.py", root / "utils" / "course" / "links.py")
    (root / "README.md").write_text(
        f"# Course\n\n{badge_markdown('notebooks/01_a.ipynb')}\n\n```\ngit clone {repo_url()}.git\ncd cxr-course\n```\n"
    )
    (root / "notebooks").mkdir()
    for name, first in [("01_a.ipynb", f"# 01 · A\n\n{badge_markdown('notebooks/01_a.ipynb', 'old/repo')}\n\nText."),
                        ("02_b.ipynb", "# 02 · B\n\nNo badge yet.")]:  # fmt: skip
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell(first), nbformat.v4.new_code_cell(setup_cell_source("old/repo")),
                    nbformat.v4.new_code_cell("print('see https://github.com/x/y')")]  # fmt: skip
        nbformat.write(nb, root / "notebooks" / name)
    return root


def test_rewrite_badges_points_everything_at_the_fork_once(course):
    changed = rewrite_badges(course, FORK)
    assert sorted(p.relative_to(course).as_posix() for p in changed) == ["README.md", "notebooks/01_a.ipynb",
                                                                          "notebooks/02_b.ipynb"]  # fmt: skip
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


def test_set_repo_rewrites_only_the_repo_line(course):
    source = course / "utils" / "course" / "links.py"
    before = source.read_text()
    assert set_repo(FORK, course) is True
    after = source.read_text()
    assert f'REPO = "{FORK}"' in after and f'REPO = "{REPO}"' not in after
    assert [a for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b] == [f'REPO = "{REPO}"']
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
                   "updated README.md", f"links point at https://github.com/{FORK} (4 file(s) changed)"]  # fmt: skip
    with pytest.raises(ConfigError):
        main_links("not a repo", root=course)
