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
from mlops_magics import payloads
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

    assert mlops(home, "delete", "iris:1").stdout.strip() == "Deleted iris:1 (removed aliases production, staging)."
    assert mm.list_models() == ()


@pytest.mark.parametrize("args, message", [
    (["model", "nothing"], "No model named 'nothing'"),
    (["register", "/no/such/file", "--name", "x"], "No file or folder at '/no/such/file'"),
    (["register", ".", "--name", "bad name"], "Invalid model name 'bad name'"),
    (["model", "x:zero"], "Invalid version 'zero'"),
    (["model", "x:99999999999999999999999"], "a version is a whole number from 1 to 9223372036854775807"),
    (["register", ".", "--name", "x", "--metric", "accuracy=high"],
     "--metric 'accuracy=high': 'high' is not a number. Write KEY=NUMBER, e.g. --metric accuracy=0.97."),
    (["compare", "x:1"], "Compare at least two versions"),
])
def test_user_errors_exit_2_with_the_message_on_stderr(home: Path, args: list[str], message: str) -> None:
    done = mlops(home, *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_pickle_registered_from_the_command_line_is_untrusted_until_mlops_trust(
    registry: Registry, home: Path, tmp_path: Path, iris_lr: Any
) -> None:
    from mlops_magics.registry.db import current_user
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

def test_export_refuses_an_artifact_with_an_extra_file_and_copies_nothing(registry: Registry, home: Path,
                                                                         tmp_path: Path) -> None:
    v = mm.register({"a": 1}, "m")
    assert v.artifact_path is not None
    os.chmod(v.artifact_path, 0o755)
    (v.artifact_path / "extra.py").write_text("print('not registered')")
    out = tmp_path / "exported"
    done = mlops(home, "export", "m:1", str(out))
    assert done.returncode == 2 and "holds 'extra.py', which was not registered" in done.stderr
    assert "sha256 verified" not in done.stdout and not out.exists()


def test_registry_backup_check_and_restore(registry: Registry, home: Path, tmp_path: Path) -> None:
    mm.register({"a": 1}, "m")
    done = mlops(home, "registry", "backup", str(tmp_path / "copy.db"))
    assert done.returncode == 0, done.stderr
    assert "Backed up the registry database (1 version(s)" in done.stdout and "integrity check passed" in done.stdout
    mm.register({"a": 2}, "m")

    checked = mlops(home, "registry", "check", "--json")
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["ok"] and report["versions"] == 2 and report["problems"] == []
    assert json.loads(mlops(home, "--json", "registry", "check").stdout)["ok"]
    assert mlops(home, "registry", "check").stdout.startswith(f"Registry {home}: OK")

    refused = mlops(home, "registry", "restore", str(tmp_path / "copy.db"))
    assert refused.returncode == 2 and "is healthy" in refused.stderr and "--force" in refused.stderr
    restored = mlops(home, "registry", "restore", str(tmp_path / "copy.db"), "--force")
    assert restored.returncode == 0, restored.stderr
    assert "1 version(s) registered after the backup are not in it" in restored.stdout
    checked = mlops(home, "registry", "check")
    assert checked.returncode == 0 and "m:2: has a manifest" in checked.stdout  # a warning, not an error


def test_registry_check_exits_1_on_a_damaged_artifact_and_rebuild_refuses_a_healthy_database(
        registry: Registry, home: Path) -> None:
    v = mm.register({"a": 1}, "m")
    refused = mlops(home, "registry", "rebuild")
    assert refused.returncode == 2 and "is healthy" in refused.stderr and "refuses to overwrite it" in refused.stderr
    assert v.artifact_path is not None
    (v.artifact_path / "model.pkl").unlink()
    checked = mlops(home, "registry", "check")
    assert checked.returncode == 1
    assert "1 error(s)" in checked.stdout and "model.pkl is missing" in checked.stdout
    report = json.loads(mlops(home, "registry", "check", "--json").stdout)
    assert not report["ok"] and [p["subject"] for p in report["problems"]] == ["m:1"]


def test_registry_rebuild_brings_back_a_lost_database(registry: Registry, home: Path) -> None:
    mm.register({"a": 1}, "m", tags={"team": "cv"})
    (home / "registry.db").write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        (home / f"registry.db{suffix}").unlink(missing_ok=True)
    listed = mlops(home, "models")
    assert listed.returncode == 2 and "is empty (0 bytes), but 1 artifact(s)" in listed.stderr
    assert "Traceback" not in listed.stderr
    rebuilt = mlops(home, "registry", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "from its manifests: 1 version(s) of 1 model(s)" in rebuilt.stdout
    shown = json.loads(mlops(home, "--json", "model", "m:1").stdout)
    assert shown["tags"] == {"team": "cv"}


def test_register_metrics_list_them_and_compare_versions(registry: Registry, home: Path, tmp_path: Path,
                                                         iris_lr: Any) -> None:
    import joblib

    joblib.dump(iris_lr, tmp_path / "model.pkl")
    for accuracy in ("0.97", "0.95"):
        done = mlops(home, "register", str(tmp_path / "model.pkl"), "--name", "iris",
                     "--metric", f"accuracy={accuracy}", "-m", "f1=0.9")
        assert done.returncode == 0, done.stderr
    listed = json.loads(mlops(home, "--json", "models").stdout)
    assert [m["metrics"] for m in listed] == [{"accuracy": 0.97, "f1": 0.9}, {"accuracy": 0.95, "f1": 0.9}]
    assert mlops(home, "models").stdout.splitlines()[0].split()[-2:] == ["accuracy", "f1"]
    text = mlops(home, "compare", "iris:1", "iris:2")
    assert text.returncode == 0, text.stderr
    assert "metrics (registered):" in text.stdout and text.stdout.splitlines()[0].split() == ["iris:1", "iris:2"]
    shown = json.loads(mlops(home, "--json", "compare", "iris:1", "iris:2").stdout)
    assert {"section": "metrics (registered)", "what": "accuracy", "values": {"iris:1": 0.97, "iris:2": 0.95}} in (
        shown["rows"])


def test_every_magic_of_the_extension_has_a_verb(ip: Any) -> None:
    from mlops_magics import cli

    ours = [magics for magics in ip.magics_manager.registry.values()
            if type(magics).__module__.startswith("mlops_magics")]
    names = {name for magics in ours for kind in ("line", "cell") for name in magics.magics[kind]}
    assert {"deploy", "dockerfile_steps", "load_model", "score_script"} <= names  # found them
    verbs = set(cli.verb_names())
    missing = sorted(name for name in names if cli.verb_for(name) not in verbs)
    assert not missing, f"magics without a mlops verb: {missing} (add one, or map it in cli.RENAMED)"
    assert (cli.verb_for("load_model"), cli.verb_for("delete_model"), cli.verb_for("score_script")) == (
        "export", "delete", "score-script")
    help_text = cli.build_parser().format_help()
    assert all(f"%{magic}" in help_text and verb in help_text for magic, verb in cli.RENAMED.items())


def test_python_m_runs_the_same_command_line(home: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mlops_magics.cli", "--json", "models"], capture_output=True,
                          text=True, env={**os.environ, "MLOPS_HOME": str(home)})
    assert (done.returncode, json.loads(done.stdout)) == (0, [])


def test_alias_history_and_removal_derived_from_and_json_statuses(
        registry: Registry, tmp_path: Path, iris_lr: Any, iris: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import joblib

    from tests.cli_run import mlops

    joblib.dump(iris_lr, tmp_path / "model.pkl")
    v = mlops(capsys, "register", str(tmp_path / "model.pkl"), "--name", "iris", "--trust", "--json").json
    assert v == payloads.version_json(registry.get("iris:1"))
    derived = mlops(capsys, "register", str(tmp_path / "model.pkl"), "--name", "iris", "--derived-from", "iris:1",
                    "--json").json
    assert derived["lineage"] == registry.get("iris:2").lineage.as_dict() and derived["lineage"]["derived_from"]
    assert mlops(capsys, "alias", "iris:1", "staging").code == 0
    removed = mlops(capsys, "alias", "iris", "staging", "--remove")
    assert removed.out == "Removed alias 'staging' from iris.\n" and registry.get("iris:1").aliases == ()
    history = mlops(capsys, "alias", "iris", "--history", "--json").json
    assert [(e["alias"], e["version"]) for e in history] == [("staging", 1), ("staging", None)]
    assert mlops(capsys, "alias", "iris:1").code == 2
    assert mlops(capsys, "tag", "iris:1").code == 2
    assert mlops(capsys, "delete", "iris:1", "--json").json["version"] == 1
    assert [m.ref for m in mm.list_models()] == ["iris:2"]
