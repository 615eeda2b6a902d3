"""Where a model came from: notebook or script, cell, Python version, git commit."""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from pathlib import Path

from mlops_magics.registry.records import Lineage


def git_commit(start: Path) -> str | None:
    """The commit checked out in the git work tree holding ``start``, read from ``.git`` directly.

    No subprocess: this runs on every registration.
    """
    for folder in (start, *start.parents):
        dot_git = folder / ".git"
        if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = dot_git.read_text().strip()
            if not text.startswith("gitdir:"):
                return None
            dot_git = (folder / text.split(":", 1)[1].strip()).resolve()
        if dot_git.is_dir():
            return _read_head(dot_git)
    return None


def _read_head(git_dir: Path) -> str | None:
    try:
        head = (git_dir / "HEAD").read_text().strip()
    except OSError:
        return None
    if not head.startswith("ref:"):
        return head or None
    ref = head[4:].strip()
    common = git_dir
    commondir = git_dir / "commondir"
    if commondir.is_file():
        common = (git_dir / commondir.read_text().strip()).resolve()
    for base in (git_dir, common):
        loose = base / ref
        if loose.is_file():
            return loose.read_text().strip() or None
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            sha, _, name = line.partition(" ")
            if name == ref:
                return sha
    return None  # an unborn branch: no commit yet


def running_script() -> str | None:
    """The path of the Python script this process runs, if it runs one (not ``python -c``)."""
    if sys.argv and sys.argv[0] and os.path.isfile(sys.argv[0]):
        return str(Path(sys.argv[0]).resolve())
    return None


def capture(
    *,
    notebook: str | None = None,
    script: str | None = None,
    cell_execution_count: int | None = None,
    cell_id: str | None = None,
    cell_source: str | None = None,
    derived_from: str | None = None,
) -> Lineage:
    """Record what is known about where the model being registered comes from.

    Args:
        notebook: path of the notebook, when the caller knows it (the magics do).
        script: path of the script registering the model (see :func:`running_script`).
        cell_execution_count: the ``In[n]`` number of the registering cell.
        cell_id: the notebook's id of that cell (stable across kernel restarts, unlike its number).
        cell_source: the registering cell's source; only its sha256 is kept.
        derived_from: ``NAME:VERSION`` of the version this one was made from.
    """
    anchor = Path(notebook).resolve().parent if notebook else Path(script).parent if script else Path.cwd()
    return Lineage(
        notebook=notebook,
        script=script,
        cell_execution_count=cell_execution_count,
        cell_id=cell_id,
        cell_source_sha256=hashlib.sha256(cell_source.encode()).hexdigest() if cell_source is not None else None,
        python_version=platform.python_version(),
        git_commit=git_commit(anchor),
        derived_from=derived_from,
    )
