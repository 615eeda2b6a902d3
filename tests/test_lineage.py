"""Lineage: git commit read without a subprocess, agreeing with git itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mlops_magics as mm
from mlops_magics.registry import Registry, lineage


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin"}).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    _git(root, "init", "-q", "-b", "main")
    (root / "notebooks" / "train.ipynb").write_text("{}")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "first")
    return root


def test_git_commit_matches_rev_parse_for_loose_and_packed_refs(repo: Path) -> None:
    head = _git(repo, "rev-parse", "HEAD")
    assert lineage.git_commit(repo / "notebooks") == head
    _git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert lineage.git_commit(repo / "notebooks") == head


def test_detached_head_and_worktrees_are_read(repo: Path, tmp_path: Path) -> None:
    head = _git(repo, "rev-parse", "HEAD")
    _git(repo, "worktree", "add", "-q", str(tmp_path / "wt"), "-b", "side")
    assert lineage.git_commit(tmp_path / "wt") == head
    _git(repo, "checkout", "-q", "--detach")
    assert lineage.git_commit(repo) == head


def test_outside_a_repository_there_is_no_commit(tmp_path: Path) -> None:
    assert lineage.git_commit(tmp_path) is None


def test_capture_records_notebook_cell_and_commit(repo: Path) -> None:
    nb = repo / "notebooks" / "train.ipynb"
    found = lineage.capture(notebook=str(nb), cell_execution_count=7, cell_source="%register clf")
    assert found.notebook == str(nb) and found.cell_execution_count == 7
    assert found.git_commit == _git(repo, "rev-parse", "HEAD")
    assert found.cell_source_sha256 is not None and len(found.cell_source_sha256) == 64


def test_derived_from_is_resolved_to_an_exact_version(registry: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris", alias="production")
    child = mm.register(iris_lr, "iris-small", derived_from="iris@production")
    assert child.lineage.derived_from == "iris:1"


def test_a_script_registering_a_model_is_recorded(home: Path, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("import mlops_magics as mm\nprint(mm.register({'w': 1}, 'scripted').lineage.script)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                         env={**os.environ, "MLOPS_HOME": str(home)}).stdout
    assert out.strip() == str(script.resolve())


def test_the_magics_record_no_kernel_launcher_as_the_script(ip: Any, iris_lr: Any) -> None:
    ip.user_ns["clf"] = iris_lr
    v = ip.run_line_magic("register", "clf")
    assert v.lineage.script is None
    assert v.lineage.cell_execution_count is None  # called from code, not from a cell: no cell to name


def test_lineage_names_the_cell_that_ran_register(ip: Any, iris_lr: Any) -> None:
    import hashlib

    ip.user_ns["clf"] = iris_lr
    ip.run_cell("x = 1", store_history=True)
    source = "v = %register clf --name iris\nv"
    result = ip.run_cell(source, store_history=True, cell_id="cell-abc")
    result.raise_error()
    v = ip.user_ns["v"]
    # the number shown as In[n] beside the cell (IPython counts the next cell up front while this one runs)
    assert v.lineage.cell_execution_count == result.execution_count == ip.execution_count - 1
    assert ip.history_manager.input_hist_raw[result.execution_count] == source
    assert v.lineage.cell_source_sha256 == hashlib.sha256(source.encode()).hexdigest()  # the cell as written
    assert v.lineage.cell_id == "cell-abc"
    again = ip.run_cell("w = %register clf --name iris", store_history=True)
    assert ip.user_ns["w"].lineage.cell_execution_count == again.execution_count == result.execution_count + 1


def test_a_cell_run_without_history_has_no_number(ip: Any, iris_lr: Any) -> None:
    ip.user_ns["clf"] = iris_lr
    ip.run_cell("v = %register clf --name iris", store_history=False).raise_error()
    assert ip.user_ns["v"].lineage.cell_execution_count is None  # no In[n] names it
