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


def test_a_pickle_registered_from_the_command_line_is_untrusted_until_mlops_trust(
    registry: Registry, home: Path, tmp_path: Path, iris_lr: Any
) -> None:
    from mlops_magics.registry.store import current_user
    from tests.test_trust import evil_pickle

    marker = tmp_path / "marker"
    done = mlops(home, "register", str(evil_pickle(tmp_path / "evil.pkl", marker)), "--name", "evil")
    assert done.returncode == 0, done.stderr
    assert f"trust        NOT TRUSTED: registered from '{tmp_path / 'evil.pkl'}'" in done.stdout
    shown = json.loads(mlops(home, "--json", "model", "evil:1").stdout)["trust"]
    assert (shown["trusted"], shown["trusted_by"], shown["origin"]) == (False, None, "path")
    assert shown["load_risk"].startswith("a pickle (joblib)") and shown["status"].startswith("NOT TRUSTED")
    assert mlops(home, "export", "evil:1", str(tmp_path / "out")).returncode == 0
    assert not marker.exists()

    refused = mlops(home, "trust", "evil")
    assert refused.returncode == 2 and "Say which version to trust: evil:VERSION" in refused.stderr
    trusted = mlops(home, "--json", "trust", "evil:1")
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(trusted.stdout)["trust"]["trusted_by"] == current_user()
    assert not marker.exists()  # trusting runs nothing either
    mm.load_model("evil:1")
    assert marker.exists()

    joblib_file = tmp_path / "model.pkl"
    import joblib

    joblib.dump(iris_lr, joblib_file)
    done = mlops(home, "register", str(joblib_file), "--name", "iris", "--trust")
    assert done.returncode == 0 and f"trusted by {current_user()}" in done.stdout
    assert mm.load_model("iris:1").predict([[5.1, 3.5, 1.4, 0.2]]).tolist() == [0]
