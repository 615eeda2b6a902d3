"""The magics in a real IPython shell: results, namespace effects, and plain UsageErrors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from IPython.core.error import UsageError

import mlops_magics as mm
from mlops_magics.magics import MAGICS as FAMILIES

MAGICS = ["register", "models", "model", "load_model", "alias", "tag", "delete_model", "score_script", "environment",
          "deploy", "deployments", "undeploy", "logs", "reload", "update", "call", "package", "build", "images",
          "onnx", "validate", "profile", "collected", "monitor", "label", "trust", "compare", "scale"]
CELL_ONLY = ["dockerfile_steps"]


def test_load_ext_registers_every_magic_and_keeps_ipythons_alias(ip: Any) -> None:
    line = ip.magics_manager.magics["line"]
    for name in MAGICS:
        assert getattr(line[name], "__self__", None).__class__ in FAMILIES
    assert "shell_alias" in line and line["shell_alias"].__self__.__class__.__name__ == "OSMagics"
    for name in CELL_ONLY:
        assert getattr(ip.magics_manager.magics["cell"][name], "__self__", None).__class__ in FAMILIES


@pytest.mark.parametrize("name", MAGICS + CELL_ONLY)
def test_every_option_documents_itself(ip: Any, name: str) -> None:
    doc = (ip.find_cell_magic if name in CELL_ONLY else ip.find_line_magic)(name).__doc__
    assert doc and f"%{name}" in doc
    magic = (ip.find_cell_magic if name in CELL_ONLY else ip.find_line_magic)(name)
    for action in magic.parser._actions:
        if action.dest != "help":
            assert action.help, f"%{name} option {action.dest} has no help="


@pytest.mark.parametrize("name", MAGICS + CELL_ONLY)
def test_every_magics_help_ends_with_two_or_three_examples_of_itself(ip: Any, name: str) -> None:
    doc = (ip.find_cell_magic if name in CELL_ONLY else ip.find_line_magic)(name).__doc__
    head, _, tail = doc.rstrip().rpartition("\nExamples::\n\n")
    assert head, f"%{name}? has no Examples section at its end"
    calls = [line.strip() for line in tail.split("\n") if line.strip().startswith("%")]
    assert 2 <= len(calls) <= 3, calls
    assert all(c.split()[0] in (f"%{name}", f"%%{name}") for c in calls), calls
    assert all(line.startswith("  ") for line in tail.split("\n")), "examples are indented (a code block)"


def test_register_a_notebook_variable_with_tags_sample_and_alias(ip: Any, iris_lr: Any, iris: Any) -> None:
    ip.user_ns.update(clf=iris_lr, X_test=iris[0][:10])
    v = ip.run_line_magic(
        "register", 'clf --name iris --tag team=cv --tag data=v1 --description "first model" '
        "--sample X_test[:5] --alias staging")
    assert isinstance(v, mm.ModelVersion)
    assert (v.ref, dict(v.tags), v.description, v.aliases) == ("iris:1", {"team": "cv", "data": "v1"},
                                                                "first model", ("staging",))
    assert v.input_example is not None and len(v.input_example["data"]) == 5
    assert v.lineage.cell_execution_count is None  # not run from a cell (test_lineage: the cell that ran it)


def test_register_defaults_the_name_to_the_variable_and_records_the_cell(ip: Any, iris_lr: Any) -> None:
    ip.user_ns["wine_model"] = iris_lr
    result = ip.run_cell("v = %register wine_model", store_history=True)
    assert result.success
    v = ip.user_ns["v"]
    assert v.ref == "wine_model:1"
    import hashlib

    assert v.lineage.cell_source_sha256 == hashlib.sha256(b"v = %register wine_model").hexdigest()  # as written
    assert v.lineage.cell_execution_count == result.execution_count


def test_register_without_name_says_the_model_is_named_after_the_variable(
        ip: Any, iris_lr: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ip.user_ns["gb"] = iris_lr
    assert ip.run_line_magic("register", "gb").ref == "gb:1"
    assert capsys.readouterr().out == ("Registered gb:1: the model is named after the variable 'gb' (--name NAME "
                                       "names it otherwise).\n")
    assert ip.run_line_magic("register", "gb --name wine").ref == "wine:1"
    assert capsys.readouterr().out == ""  # named: nothing to say


def test_models_model_alias_tag_and_load_model(ip: Any, iris_lr: Any, iris_tree: Any) -> None:
    ip.user_ns.update(lr=iris_lr, tree=iris_tree)
    ip.run_line_magic("register", "lr --name iris --tag kind=linear")
    ip.run_line_magic("register", "tree --name iris --tag kind=tree")
    assert [v.ref for v in ip.run_line_magic("models", "--tag kind=tree")] == ["iris:2"]
    assert [v.ref for v in ip.run_line_magic("models", "--name 'ir*' --latest")] == ["iris:2"]
    moved = ip.run_line_magic("alias", "iris:1 production")
    assert (moved.version.ref, moved.version.aliases, moved.previous) == ("iris:1", ("production",), None)
    assert ip.run_line_magic("model", "iris@production").version == 1
    assert dict(ip.run_line_magic("tag", "iris:1 owner=ana --remove kind").tags) == {"owner": "ana"}
    loaded = ip.run_line_magic("load_model", "iris@production --as prod")
    assert ip.user_ns["prod"] is loaded
    X = np.asarray([[6.3, 3.3, 6.0, 2.5]])
    assert loaded.predict(X).tolist() == iris_lr.predict(X).tolist()
    ip.run_line_magic("load_model", "iris:2")
    assert ip.user_ns["iris"].predict(X).tolist() == iris_tree.predict(X).tolist()
    history = ip.run_line_magic("alias", "iris --history")
    assert [(e.alias, e.version) for e in history] == [("production", 1)]
    assert ip.run_line_magic("alias", "iris production --remove") is None
    assert ip.run_line_magic("model", "iris").aliases == ()


def test_alias_shows_one_line_not_the_versions_card(ip: Any, iris_lr: Any, iris_tree: Any) -> None:
    ip.user_ns.update(lr=iris_lr, tree=iris_tree)
    ip.run_line_magic("register", "lr --name iris")
    ip.run_line_magic("register", "tree --name iris")
    first = ip.run_line_magic("alias", "iris:1 production")
    moved = ip.run_line_magic("alias", "iris:2 production")
    again = ip.run_line_magic("alias", "iris:2 production")
    assert [repr(first), repr(moved), repr(again)] == [
        "iris@production -> iris:1 (new alias)", "iris@production -> iris:2 (was iris:1)",
        "iris@production -> iris:2 (unchanged)"]
    assert moved._repr_html_() == "<code>iris@production -&gt; iris:2 (was iris:1)</code>"
    assert mm.get_model("iris@production").version == 2


def test_delete_model_prints_a_status_line(ip: Any, iris_lr: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ip.user_ns["clf"] = iris_lr
    ip.run_line_magic("register", "clf --alias production")
    ip.run_line_magic("register", "clf")
    capsys.readouterr()
    ip.run_line_magic("delete_model", "clf:1")
    assert capsys.readouterr().out == "Deleted clf:1 (removed alias production).\n"
    assert [v.ref for v in mm.list_models()] == ["clf:2"]


@pytest.mark.parametrize("line, message", [
    ("clff", r"No variable named 'clff' in the notebook. Did you mean 'clf'\?"),
    ("clf --name 'bad name'", "Invalid model name 'bad name'"),
    ("clf --tag team", "Malformed tag 'team': write tags as key=value"),
    ("clf --sample X_missing", "Could not evaluate --sample 'X_missing': NameError"),
    ("clf --sample 'X[:'", "Could not evaluate --sample"),
    ("lock", "cannot be pickled"),
    ("--path /nonexistent/model.pkl --name x", "No file or folder at '/nonexistent/model.pkl'"),
    ("clf --nope", "unrecognized arguments: --nope"),
    ("clf --metric accuracy", r"--metric 'accuracy' is not KEY=NUMBER: write e.g. --metric accuracy=0.97"),
    ("clf --metric accuracy=high", r"--metric 'accuracy=high': 'high' is not a number. Write KEY=NUMBER"),
    ("clf --metric accuracy=nan", r"Metric 'accuracy' is nan: give a finite number"),
    ("clf --metric '9lives=1'", r"Invalid metric name '9lives'"),
    ("clf -m accuracy=0.9 -m accuracy=0.8", r"Metric 'accuracy' is given twice \(0.9 and 0.8\)"),
])
def test_register_mistakes_are_plain_usage_errors(ip: Any, iris_lr: Any, line: str, message: str) -> None:
    import threading

    ip.user_ns.update(clf=iris_lr, lock=threading.Lock())
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("register", line)
    assert mm.list_models() == ()


@pytest.mark.parametrize("magic, line, message", [
    ("model", "iris:9", r"no version 9. Versions: 1"),
    ("model", "iris@prod", "no alias 'prod'. Aliases: none"),
    ("model", "irsi", "Did you mean 'iris'"),
    ("load_model", "iris --as 'not valid'", "not a valid Python variable name"),
    ("alias", "iris:1", "Name the alias"),
    ("tag", "iris:1", "Nothing to do"),
    ("delete_model", "iris", "Say which version to delete"),
    ("compare", "iris:1", r"Compare at least two versions, e.g. %compare iris:1 iris:2 \(got 1: iris:1\)"),
    ("compare", "iris:1 irsi:2", "No model named 'irsi'. Did you mean 'iris'"),
    ("compare", "iris:1 iris:7", "no version 7. Versions: 1"),
    ("compare", "iris iris:1", "'iris:1' and an earlier reference both name iris:1"),
])
def test_lookup_mistakes_list_what_exists(ip: Any, iris_lr: Any, magic: str, line: str, message: str) -> None:
    ip.user_ns["clf"] = iris_lr
    ip.run_line_magic("register", "clf --name iris")
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic(magic, line)


def test_register_metrics_show_as_columns_of_models_and_compare_puts_versions_side_by_side(
    ip: Any, iris_lr: Any, iris_tree: Any, iris: Any
) -> None:
    ip.user_ns.update(clf=iris_lr, tree=iris_tree, X=iris[0], y=iris[1])
    v = ip.run_line_magic("register", "clf --name iris --metric accuracy=0.97 -m f1=0.96 --sample X[:5]")
    assert dict(v.metrics) == {"accuracy": 0.97, "f1": 0.96}
    ip.run_line_magic("register", "tree --name iris --metric accuracy=0.95")
    ip.run_line_magic("validate", "iris:2 --data X --labels y --metric accuracy>=0.9")
    listing = ip.run_line_magic("models", "")
    text = repr(listing).splitlines()
    assert text[0].split()[-4:] == ["accuracy", "accuracy", "(validation)", "f1"], text[0]
    assert "0.97" in text[1] and "0.96" in text[1] and "0.95" in text[2]
    assert "<th" in listing._repr_html_() and "accuracy (validation)" in listing._repr_html_()
    frame = listing.to_dataframe()
    assert frame["accuracy"].tolist() == [0.97, 0.95] and frame["f1"].iloc[0] == 0.96
    assert np.isnan(frame["f1"].iloc[1]) and frame["accuracy (validation)"].iloc[1] > 0.9
    comparison = ip.run_line_magic("compare", "iris:1 iris:2")
    assert comparison.refs == ("iris:1", "iris:2")
    assert comparison.row("accuracy", "metrics (registered)").values == (0.97, 0.95)
    assert comparison.row("verdict").values == (None, "passed")
    assert "iris:1" in repr(comparison) and "metrics (measured by validation)" in comparison._repr_html_()


def test_a_usage_error_in_a_cell_shows_a_message_not_a_traceback(
    ip: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    result = ip.run_cell("%model nothing")
    assert isinstance(result.error_in_exec, UsageError)
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "No model named 'nothing'" in text and "Traceback" not in text


def test_register_a_folder_with_path_and_load_it_back_as_a_path(ip: Any, tmp_path: Any) -> None:
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "weights.bin").write_bytes(b"\x00" * 10)
    v = ip.run_line_magic("register", f"--path {tmp_path / 'outputs'} --name external --tag origin=spark")
    assert (v.flavor, dict(v.tags)) == ("files", {"origin": "spark"})
    loaded = ip.run_line_magic("load_model", "external:1 --as files")
    assert (ip.user_ns["files"] / "weights.bin").read_bytes() == b"\x00" * 10 and loaded == ip.user_ns["files"]


def test_a_corrupted_artifact_is_a_usage_error_naming_the_file(ip: Any, iris_lr: Any) -> None:
    import os

    ip.user_ns["clf"] = iris_lr
    v = ip.run_line_magic("register", "clf")
    path = v.artifact_path / "model.pkl"
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    with pytest.raises(UsageError, match=f"{path} is corrupted"):
        ip.run_line_magic("load_model", "clf:1")
    assert "clf" in ip.user_ns and ip.user_ns["clf"] is iris_lr  # nothing was bound


def test_register_model2_keeps_the_file_name_of_the_version_registered_from_a_file(
        ip: Any, iris_lr: Any, iris_tree: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import joblib

    joblib.dump(iris_lr, tmp_path / "sklearn_regression_model.pkl")
    ip.run_line_magic("register", f"--path {tmp_path / 'sklearn_regression_model.pkl'} --name diabetes --trust")
    ip.user_ns["model2"] = iris_tree
    capsys.readouterr()
    v2 = ip.run_line_magic("register", "model2 --name diabetes")
    assert [f.path for f in v2.files] == ["sklearn_regression_model.pkl"]
    assert "Saved as 'sklearn_regression_model.pkl', the file name of the previous version of diabetes" in (
        capsys.readouterr().out)
    v3 = ip.run_line_magic("register", "model2 --name diabetes --file-name model.joblib")
    assert [f.path for f in v3.files] == ["model.joblib"] and "Saved as" not in capsys.readouterr().out
    with pytest.raises(UsageError, match="Invalid file name '../x.pkl'"):
        ip.run_line_magic("register", "model2 --name diabetes --file-name ../x.pkl")
