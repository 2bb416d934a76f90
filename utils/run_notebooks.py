"""Execute the course notebooks in order (nbclient) into ``outputs/executed/``, as .ipynb and HTML."""

from __future__ import annotations

import time
from pathlib import Path

from .config import PROJECT_ROOT

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"


def find_notebooks(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks in order; ``only`` keeps those whose name starts with one of the given prefixes."""
    paths = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        paths = [p for p in paths if any(p.name.startswith(prefix) for prefix in only)]
        if not paths:
            raise FileNotFoundError(f"No notebook in {NOTEBOOK_DIR} starts with {' or '.join(only)}.")
    return paths


def execute_notebook(path: Path, out_dir: Path, timeout: int = 3600) -> Path:
    """Run one notebook with its folder as working directory; write the executed copy and its HTML."""
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        client.execute()
    finally:
        out_dir.mkdir(parents=True, exist_ok=True)
        executed = out_dir / path.name
        nbformat.write(notebook, executed)
        html, _ = HTMLExporter().from_notebook_node(notebook)
        executed.with_suffix(".html").write_text(html, encoding="utf-8")
    return executed


def execute_notebooks(paths: list[Path], out_dir: Path, timeout: int = 3600) -> list[Path]:
    """Run ``paths`` in order, stopping at the first failure (later notebooks need its outputs).

    Returns the notebooks that failed (empty when all ran).
    """
    from nbclient.exceptions import CellExecutionError

    for path in paths:
        start = time.perf_counter()
        print(f"running {path.name} ...", flush=True)
        try:
            execute_notebook(path, out_dir, timeout)
        except CellExecutionError as err:
            print(f"FAILED {path.name}: {str(err).strip().splitlines()[-1]}\n  see {out_dir / path.name}")
            return [path]
        print(f"  done in {time.perf_counter() - start:.0f} s -> {out_dir / path.with_suffix('.html').name}")
    return []
