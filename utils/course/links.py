"""The course's GitHub address, in one place, and everything derived from it.

Every notebook's "Open in Colab" badge, the clone URL in the standard setup cell (in notebooks/ and solutions/),
the badges and the ``git clone``/``cd`` pair in README.md and the repository in CITATION.cff are built from
:data:`REPO`. After a fork or a move, run ``python -m utils links --repo OWNER/NAME``: it updates :data:`REPO` in
this file and rewrites all of those places (running it again changes nothing).

The setup cell clones into :data:`CLONE_DIR` whatever the repository's NAME: the folder is the cell's own
business (it looks for the course there and clones it there, so the two always agree), and keeping it fixed keeps
the cell the same in every fork but for its URL.
"""

from __future__ import annotations

import re
from pathlib import Path

from .config import PROJECT_ROOT, ConfigError

LINKS_FILE = Path("utils") / "course" / "links.py"

REPO = "cxr-course/cxr-course"
BRANCH = "main"
CLONE_DIR = "cxr-course"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGED_NOTEBOOKS = "notebooks"  # each notebook's first cell carries its badge
OTHER_NOTEBOOKS = ("solutions",)  # same setup cell, no badge
CITATION = "CITATION.cff"

_REPO_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_REPO_LINE = re.compile(r'^REPO = "[^"\n]*"$', re.MULTILINE)
_COLAB_LINK = re.compile(
    r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/[\w.-]+/(?P<path>[^\s)\"'<>]+\.ipynb)"
)
_BADGE = re.compile(r"\[!\[[^\]]*\]\(" + re.escape(BADGE_IMAGE) + r"\)\]\([^)\s]*\)")
_GITHUB_REPO_URL = re.compile(r"https://github\.com/[\w.-]+/[\w.-]+?(?:\.git)?(?=[\"'\s);`]|$)", re.MULTILINE)
# ``git clone [options] URL`` without a target folder, then ``cd FOLDER`` (next line, or after ``&&`` or ``;``).
_CLONE_THEN_CD = re.compile(
    r"(?P<clone>git clone(?:[ \t]+(?!https://)\S+)*?[ \t]+https://github\.com/[\w.-]+/(?P<name>[\w.-]+?)(?:\.git)?)"
    r"(?P<sep>[ \t]*(?:&&|;)[ \t]*|[ \t]*\n[ \t]*(?:\$[ \t]+)?)cd[ \t]+[^\s;&|`'\"]+"
)
# CITATION.cff's own top-level keys (not those of its references) that hold the repository's address.
_CFF_REPO_KEY = re.compile(
    r"^(?P<key>repository-code|repository|url):(?P<sp>[ \t]*)(?P<q>[\"']?)"
    r"https://github\.com/[\w.-]+/[\w.-]+?(?:\.git)?/?(?P=q)[ \t]*$",
    re.MULTILINE,
)


def check_repo(repo: str) -> str:
    """``repo`` if it looks like ``OWNER/NAME``, else a :class:`ConfigError` saying what is expected."""
    repo = repo.strip().removeprefix("https://github.com/").removesuffix(".git").strip("/")
    if not _REPO_NAME.match(repo):
        raise ConfigError(f"{repo!r} is not a GitHub repository: give it as OWNER/NAME, e.g. my-org/cxr-course.")
    return repo


def repo_url(repo: str | None = None) -> str:
    """``https://github.com/OWNER/NAME`` (the setup cell clones it)."""
    return f"https://github.com/{repo or REPO}"


def colab_url(notebook_path: str | Path, repo: str | None = None) -> str:
    """The Colab address that opens ``notebook_path`` (relative to the repository root) from GitHub."""
    path = Path(notebook_path)
    path = path.resolve().relative_to(PROJECT_ROOT) if path.is_absolute() else path
    return f"https://colab.research.google.com/github/{repo or REPO}/blob/{BRANCH}/{path.as_posix()}"


def badge_markdown(notebook_path: str | Path, repo: str | None = None) -> str:
    """The "Open in Colab" badge for ``notebook_path`` as Markdown."""
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(notebook_path, repo)})"


def setup_cell_source(repo: str | None = None) -> str:
    """The first code cell of every notebook (the same 8 lines everywhere)."""
    return f"""import os, subprocess, sys
ROOT = next((p for p in (".", "..", "{CLONE_DIR}") if os.path.isfile(f"{{p}}/utils/__init__.py")), None)
if ROOT is None:  # Colab, or a copy of this notebook outside the course: fetch the course beside it
    subprocess.run(["git", "clone", "-q", "--depth", "1", "{repo_url(repo)}", "{CLONE_DIR}"], check=True)
    ROOT = "{CLONE_DIR}"
sys.path.insert(0, os.path.abspath(ROOT))
from utils.course.notebook import setup_notebook
ctx = setup_notebook()"""


def _rewrite_clone_urls(text: str, repo: str) -> str:
    lines = text.split("\n")
    return "\n".join(_GITHUB_REPO_URL.sub(repo_url(repo), line) if "clone" in line else line for line in lines)


def rewrite_markdown(text: str, repo: str) -> str:
    """Point every Colab link and ``git clone`` URL in ``text`` at ``repo`` (paths are kept); a ``cd`` right after
    such a clone goes into the folder git makes, NAME."""
    text = _COLAB_LINK.sub(lambda m: colab_url(m.group("path"), repo), text)
    text = _rewrite_clone_urls(text, repo)
    return _CLONE_THEN_CD.sub(lambda m: f"{m['clone']}{m['sep']}cd {m['name']}", text)


def rewrite_citation(text: str, repo: str) -> str:
    """Point CITATION.cff's top-level ``repository-code`` (also ``repository``, ``url``) at ``repo`` when it names a
    GitHub repository; the references' addresses are left alone."""
    return _CFF_REPO_KEY.sub(lambda m: f"{m['key']}:{m['sp']}{m['q']}{repo_url(repo)}{m['q']}", text)


def _with_badge(source: str, badge: str) -> str:
    if _BADGE.search(source):
        return _BADGE.sub(lambda _: badge, source, count=1)
    lines = source.split("\n")
    at = next((i + 1 for i, line in enumerate(lines) if line.startswith("# ")), 0)
    head, tail = "\n".join(lines[:at]).strip("\n"), "\n".join(lines[at:]).strip("\n")
    return "\n\n".join(part for part in (head, badge, tail) if part)


def rewrite_notebook(path: Path, root: Path, repo: str, badge: bool = True) -> bool:
    """Fix the Colab links, the badge in the first cell (with ``badge``, adding it under the title if missing) and
    the setup cell's clone URL.

    Writes the notebook only when something changed; returns whether it did.
    """
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    rel = path.resolve().relative_to(root.resolve()).as_posix()
    changed = False
    for index, cell in enumerate(notebook.cells):
        source = cell.source
        if cell.cell_type == "markdown":
            source = rewrite_markdown(source, repo)
            if index == 0 and badge:
                source = _with_badge(source, badge_markdown(rel, repo))
        elif cell.cell_type == "code":
            source = _rewrite_clone_urls(source, repo)
        if source != cell.source:
            cell.source = source
            changed = True
    if changed:
        nbformat.write(notebook, path)
    return changed


def _rewrite_text_file(path: Path, rewrite, repo: str) -> bool:
    if not path.exists():
        return False
    text = path.read_text(encoding="utf-8")
    new = rewrite(text, repo)
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def rewrite_badges(root: Path = PROJECT_ROOT, repo: str | None = None) -> list[Path]:
    """Rewrite from ``repo`` the badges and clone URLs of notebooks/ and solutions/, README.md's links and
    CITATION.cff's repository; returns the changed files."""
    repo = check_repo(repo or REPO)
    root = Path(root)
    changed = [p for p in sorted((root / BADGED_NOTEBOOKS).glob("*.ipynb")) if rewrite_notebook(p, root, repo)]
    for folder in OTHER_NOTEBOOKS:
        changed += [p for p in sorted((root / folder).glob("*.ipynb")) if rewrite_notebook(p, root, repo, badge=False)]
    changed += [root / name for name, rewrite in (("README.md", rewrite_markdown), (CITATION, rewrite_citation))
                if _rewrite_text_file(root / name, rewrite, repo)]  # fmt: skip
    return changed


def set_repo(repo: str, root: Path = PROJECT_ROOT) -> bool:
    """Store ``repo`` as :data:`REPO` in ``root/utils/course/links.py``; returns whether the file changed."""
    global REPO
    repo = check_repo(repo)
    source_file = Path(root) / LINKS_FILE
    text = source_file.read_text(encoding="utf-8")
    if not _REPO_LINE.search(text):
        raise ConfigError(f'No line `REPO = "..."` in {source_file}: restore it, then run this again.')
    new = _REPO_LINE.sub(f'REPO = "{repo}"', text, count=1)
    if Path(root).resolve() == PROJECT_ROOT:
        REPO = repo
    if new == text:
        return False
    source_file.write_text(new, encoding="utf-8")
    return True


def main_links(repo: str | None = None, root: Path = PROJECT_ROOT) -> int:
    """``python -m utils links [--repo OWNER/NAME]``: store the address (if given) and rewrite every link."""
    root = Path(root)
    changed: list[Path] = []
    if repo:
        repo = check_repo(repo)
        if set_repo(repo, root):
            changed.append(root / LINKS_FILE)
    changed += rewrite_badges(root, repo or REPO)
    for path in changed:
        print(f"updated {path.relative_to(root) if path.is_relative_to(root) else path}")
    print(f"links point at {repo_url(repo or REPO)} ({len(changed)} file(s) changed)")
    return 0
