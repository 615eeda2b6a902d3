"""What the cell magics take from their cell, from a file: score-script, environment, dockerfile-steps; package,
build and images (build and a container deployment against a real Docker engine)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

import mlops_magics as mm
from mlops_magics import api
from mlops_magics.registry import Registry
from tests.cli_run import mlops

SCRIPT = """\
import json, os, joblib

def init():
    global model
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.pkl"))
    with open(os.path.join(os.path.dirname(__file__), "classes.txt")) as fh:
        init.classes = fh.read().split()

def run(raw):
    rows = json.loads(raw)["data"]
    return [init.classes[int(i)] for i in model.predict(rows)]
"""


@pytest.mark.serve
def test_score_script_from_a_file_with_an_asset_tested_shown_and_generated(
        registry: Registry, iris: Any, iris_lr: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    X, _ = iris
    mm.register(iris_lr, "iris", sample=X[:2])
    generated = mlops(capsys, "score-script", "iris", "--generate")
    assert generated.out == api.generate_score_script("iris").rstrip("\n") + "\n"
    shown = mlops(capsys, "score-script", "iris", "--json").json
    assert shown == {"model": "iris", "source": api.entry_script("iris")[0], "generated": True}

    (tmp_path / "score.py").write_text(SCRIPT)
    (tmp_path / "classes.txt").write_text("setosa versicolor virginica")
    saved = mlops(capsys, "score-script", "iris", "--file", str(tmp_path / "score.py"), "--asset",
                  str(tmp_path / "classes.txt"), "--json").json
    assert saved["script"] == SCRIPT and [f["path"] for f in saved["asset_files"]] == ["classes.txt"]
    assert mlops(capsys, "score-script", "iris").out == f"# saved entry script for iris\n{SCRIPT}"
    trial = mlops(capsys, "score-script", "iris", "--test")
    assert trial.code == 0 and trial.out.startswith("iris:1: run(sample) answered 200")
    assert "['setosa', 'setosa']" in trial.out

    (tmp_path / "broken.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return 1 / 0\n")
    broken = mlops(capsys, "score-script", "iris:1", "--file", str(tmp_path / "broken.py"), "--test")
    assert broken.code == 1 and "answered 500" in broken.out  # the trial is the check: it failed
    invalid = mlops(capsys, "score-script", "iris", "--file", str(tmp_path / "classes.txt"))
    assert invalid.code == 2 and "Traceback" not in invalid.err
    assert mlops(capsys, "score-script", "iris", "--asset", "x").code == 2


def test_environment_from_a_file_or_from_the_kernel_and_written_out(
        registry: Registry, iris_lr: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sklearn

    mm.register(iris_lr, "iris")
    (tmp_path / "requirements.txt").write_text(f"scikit-learn=={sklearn.__version__}\njoblib\n")
    env = mlops(capsys, "environment", "iris", "--file", str(tmp_path / "requirements.txt"), "--write",
                str(tmp_path / "out"), "--json").json
    assert env["pip"] == [f"scikit-learn=={sklearn.__version__}", "joblib"]
    assert env == registry.inference(registry.get("iris:1")).environment
    assert (tmp_path / "out" / "requirements.txt").read_text() == f"scikit-learn=={sklearn.__version__}\njoblib\n"
    from_kernel = mlops(capsys, "environment", "iris:1", "--from-kernel")
    assert from_kernel.code == 0 and f"scikit-learn=={sklearn.__version__}" in from_kernel.out
    assert mlops(capsys, "environment", "iris").code == 2  # argparse: --file or --from-kernel is required
    capsys.readouterr()


def test_dockerfile_steps_and_a_package_that_uses_them(registry: Registry, iris_lr: Any, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    mm.register(iris_lr, "iris")
    (tmp_path / "steps").write_text("# certificates\nRUN echo one \\\n    two\nENV MODE=cli\n")
    stored = mlops(capsys, "dockerfile-steps", "iris", "--file", str(tmp_path / "steps"))
    assert stored.out.startswith("Stored 2 Dockerfile line(s) for iris;")
    refused = mlops(capsys, "dockerfile-steps", "iris", "--file", str(tmp_path / "steps"), "--json")
    assert refused.json == {"model": "iris", "lines": 2}
    (tmp_path / "from").write_text("FROM alpine\n")
    bad = mlops(capsys, "dockerfile-steps", "iris:1", "--file", str(tmp_path / "from"))
    assert bad.code == 2 and "cannot change the base image" in bad.err

    context = mlops(capsys, "package", "iris", "--output", str(tmp_path / "ctx"), "--no-wheels", "--json").json
    assert context["folder"] == str(tmp_path / "ctx") and "Dockerfile" in context["files"]
    assert "ENV MODE=cli" in (tmp_path / "ctx" / "Dockerfile").read_text()
    assert mlops(capsys, "images", "--json").json == [] and mlops(capsys, "images").out.startswith("No images")
    both = mlops(capsys, "package", "iris", "--build", "--no-wheels")
    assert both.code == 2 and "drop --output/--no-wheels" in both.err


@pytest.mark.docker
def test_build_images_and_a_container_deployment(registry: Registry, iris: Any, iris_lr: Any,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_docker import BASE, _engine_or_skip

    _engine_or_skip()
    monkeypatch.setenv("MLOPS_BASE_IMAGE", BASE)
    X, _ = iris
    mm.register(iris_lr, "iris", sample=X[:2])
    mm.set_environment("iris", None, from_kernel=True)
    # a context of its own: an identical image left on the engine by an earlier run would be reused unbuilt
    api.set_dockerfile_steps("iris", f"LABEL mlops-test-run={uuid.uuid4().hex}", registry=registry)
    try:
        built = mlops(capsys, "build", "iris", "--json")
        assert built.json["tag"].startswith("mlops/iris:1-") and "Step 1/" in built.err  # progress on stderr
        assert mlops(capsys, "images", "iris", "--json").json == [built.json]
        deployed = mlops(capsys, "deploy", "iris", "--target", "docker", "--no-build", "--cpu", "0.5", "--json")
        assert (deployed.json["target"], deployed.json["state"]) == ("docker", "running")
        assert mlops(capsys, "call", "iris", json.dumps(X[:2].tolist()), "--json").json == iris_lr.predict(
            X[:2]).tolist()
        in_use = mlops(capsys, "images", "iris", "--remove")
        assert in_use.code == 2 and "used by the live deployment 'iris'" in in_use.err
    finally:
        api.undeploy(all_services=True)
    removed = mlops(capsys, "images", "iris", "--remove")
    assert removed.code == 0 and removed.out.startswith("Removed 1 image(s): mlops/iris:1-")


@pytest.mark.serve
def test_score_script_test_takes_a_sample(registry: Registry, iris: Any, iris_lr: Any, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    X, _ = iris
    mm.register(iris_lr, "iris")  # no registered example
    (tmp_path / "score.py").write_text("import json\n\ndef init():\n    pass\n\ndef run(raw):\n"
                                       "    return {'rows': len(json.loads(raw)['data'])}\n")
    (tmp_path / "rows.json").write_text(json.dumps(X[:4].tolist()))
    assert mlops(capsys, "score-script", "iris", "--test").code == 2  # nothing to send
    inline = mlops(capsys, "score-script", "iris", "--file", str(tmp_path / "score.py"), "--test", "--sample",
                   "[[5.1, 3.5, 1.4, 0.2]]", "--json").json
    assert inline["status"] == 200 and inline["output"] == {"rows": 1}
    from_file = mlops(capsys, "score-script", "iris", "--test", "--sample", str(tmp_path / "rows.json"), "--json")
    assert from_file.json["output"] == {"rows": 4}
    assert api.script_info("iris").file == str(tmp_path / "score.py")
    alone = mlops(capsys, "score-script", "iris", "--sample", "[[1]]")
    assert alone.code == 2 and "is what --test sends: add --test" in alone.err
