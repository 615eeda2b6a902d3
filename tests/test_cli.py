"""The ``mlops`` command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mlops_magics as mm
from mlops_magics.registry import Registry


def mlops(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("mlops", path=os.path.dirname(sys.executable))
    assert exe, "the mlops entry point is installed beside the interpreter"
    return subprocess.run([exe, *args], capture_output=True, text=True, env={**os.environ, "MLOPS_HOME": str(home)})


def test_register_a_file_list_alias_tag_export_and_delete(registry: Registry, home: Path, tmp_path: Path,
                                                          iris_lr: Any) -> None:
    import joblib

    joblib.dump(iris_lr, tmp_path / "model.pkl")
    done = mlops(home, "register", str(tmp_path / "model.pkl"), "--name", "iris", "--tag", "team=cv",
                 "--alias", "staging")
    assert done.returncode == 0, done.stderr
    assert "iris" in done.stdout and "staging" in done.stdout

    listed = json.loads(mlops(home, "--json", "models", "--tag", "team=cv").stdout)
    assert [(m["name"], m["version"], m["aliases"]) for m in listed] == [("iris", 1, ["staging"])]

    assert mlops(home, "alias", "iris:1", "production").returncode == 0
    shown = json.loads(mlops(home, "--json", "model", "iris@production").stdout)
    assert shown["version"] == 1 and sorted(shown["aliases"]) == ["production", "staging"]

    assert json.loads(mlops(home, "--json", "tag", "iris:1", "owner=ana").stdout)["tags"] == {
        "owner": "ana", "team": "cv"}

    out = tmp_path / "exported"
    assert mlops(home, "export", "iris@production", str(out)).returncode == 0
    assert joblib.load(out / "model.pkl").predict([[5.1, 3.5, 1.4, 0.2]]).tolist() == [0]

    assert mlops(home, "delete", "iris:1").stdout.strip() == "Deleted iris:1."
    assert mm.list_models() == ()


@pytest.mark.parametrize("args, message", [
    (["model", "nothing"], "No model named 'nothing'"),
    (["register", "/no/such/file", "--name", "x"], "No file or folder at '/no/such/file'"),
    (["register", ".", "--name", "bad name"], "Invalid model name 'bad name'"),
    (["model", "x:zero"], "Invalid version 'zero'"),
])
def test_user_errors_exit_2_with_the_message_on_stderr(home: Path, args: list[str], message: str) -> None:
    done = mlops(home, *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
