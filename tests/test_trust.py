"""Untrusted pickles: a pickle registered from a path runs nothing until someone trusts it, in a real IPython shell
on a real registry file. The evil pickle's only effect is a marker file: absent means its code never ran."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from IPython.core.error import UsageError

import mlops_magics as mm
from mlops_magics import api, flavors
from mlops_magics.errors import InvalidInputError, SerializationError, UntrustedModelError
from mlops_magics.payloads import version_json
from mlops_magics.registry import Registry, cards, trust
from mlops_magics.registry.db import current_user, utcnow
from tests.schema import roll_back


class _Payload:
    """Pickles to a call of ``exec``: unpickling it runs ``code`` (only builtins are needed to load it)."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, (self.code,)


def evil_pickle(path: Path, marker: Path) -> Path:
    """Write a pickle at ``path`` whose loading writes ``marker``: the id of the process that ran it."""
    code = f"import os, pathlib; pathlib.Path({str(marker)!r}).write_text(str(os.getpid()))"
    path.write_bytes(pickle.dumps(_Payload(code), protocol=4))
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "marker"


@pytest.fixture
def evil(tmp_path: Path, marker: Path) -> Path:
    return evil_pickle(tmp_path / "evil.pkl", marker)


def test_registering_listing_showing_and_exporting_an_evil_pickle_runs_nothing(
    ip: Any, evil: Path, marker: Path, tmp_path: Path
) -> None:
    v = ip.run_line_magic("register", f"--path {evil} --name evil")
    assert (v.origin, v.origin_path, v.trusted, v.trusted_by, v.trusted_at) == ("path", str(evil), False, None, None)
    assert [x.ref for x in ip.run_line_magic("models", "")] == ["evil:1"]
    shown = ip.run_line_magic("model", "evil:1")
    assert "UNTRUSTED" in repr(shown)
    card = cards.model_version_html(shown)
    assert "NOT TRUSTED" in card and "color:#c62828" in card and "%trust evil:1" in card
    assert not marker.exists()


def test_load_model_refuses_an_untrusted_pickle_then_loads_it_once_trusted(ip: Any, evil: Path, marker: Path) -> None:
    ip.run_line_magic("register", f"--path {evil} --name evil")
    with pytest.raises(UsageError, match=r"Refusing to load evil:1: it is a pickle \(joblib\).*registered from "
                                         rf"'{evil}'.*%trust evil:1 \(or `mlops trust evil:1`"):
        ip.run_line_magic("load_model", "evil:1")
    assert not marker.exists() and "evil" not in ip.user_ns
    with pytest.raises(UntrustedModelError, match="Refusing to load evil:1"):
        mm.load_model("evil")
    assert not marker.exists()

    before = utcnow()
    trusted = ip.run_line_magic("trust", "evil:1")
    assert trusted.trusted and trusted.trusted_by == current_user()
    assert trusted.trusted_at is not None and before <= trusted.trusted_at <= utcnow()
    assert trusted.sha256 == mm.get_model("evil:1").sha256  # a registry write: the artifact is as registered
    assert "UNTRUSTED" not in repr(trusted) and f"trusted by {current_user()}" in trust.status(trusted)

    ip.run_line_magic("load_model", "evil:1")
    assert marker.read_text() == str(os.getpid())  # it ran here: the gate was the only thing in its way


def test_trusting_is_idempotent_can_be_revoked_and_names_an_exact_version(ip: Any, evil: Path, marker: Path) -> None:
    ip.run_line_magic("register", f"--path {evil} --name evil")
    first = mm.trust_model("evil:1")
    assert mm.trust_model("evil:1").trusted_text == first.trusted_text  # the first record stays
    for ref in ("evil", "evil@prod", "evil:latest"):
        with pytest.raises(UsageError, match="Say which version to trust: evil:VERSION"):
            ip.run_line_magic("trust", ref)
    with pytest.raises(UsageError, match="Model 'evil' has no version 2"):
        ip.run_line_magic("trust", "evil:2")
    revoked = ip.run_line_magic("trust", "evil:1 --revoke")
    assert (revoked.trusted, revoked.trusted_by, revoked.trusted_at) == (False, None, None)
    with pytest.raises(UsageError, match="Refusing to load evil:1"):
        ip.run_line_magic("load_model", "evil:1")
    assert not marker.exists()


def test_register_with_trust_records_who_and_when_and_loads(ip: Any, tmp_path: Path, iris_lr: Any) -> None:
    import joblib

    joblib.dump(iris_lr, tmp_path / "model.pkl")
    v = ip.run_line_magic("register", f"--path {tmp_path / 'model.pkl'} --name external --trust")
    assert (v.trusted, v.trusted_by, v.trusted_text) == (True, current_user(), v.created_text)
    assert version_json(v)["trust"] == {
        "trusted": True, "trusted_by": current_user(), "trusted_at": v.created_at.isoformat(), "origin": "path",
        "origin_path": str(tmp_path / "model.pkl"), "load_risk": trust.load_risk(v),
        "serve_risk": trust.serve_risk(v), "status": trust.status(v)}
    loaded = ip.run_line_magic("load_model", "external:1 --as ext")
    assert loaded.predict([[5.1, 3.5, 1.4, 0.2]]).tolist() == [0]


def test_a_model_registered_from_the_notebook_loads_with_no_trust_step(ip: Any, iris_lr: Any) -> None:
    ip.user_ns["clf"] = iris_lr
    v = ip.run_line_magic("register", "clf")
    assert (v.origin, v.origin_path, v.trusted, v.trusted_by, v.trusted_text) == (
        "object", None, True, current_user(), v.created_text)
    assert "saved from an object in memory" in trust.status(v) and "UNTRUSTED" not in repr(v)
    X = np.asarray([[6.3, 3.3, 6.0, 2.5]])
    assert ip.run_line_magic("load_model", "clf:1 --as again").predict(X).tolist() == iris_lr.predict(X).tolist()


def test_serving_an_untrusted_pickle_is_refused_everywhere_then_a_trusted_one_deploys(
    ip: Any, evil: Path, marker: Path, tmp_path: Path
) -> None:
    try:
        _refused_then_served(ip, marker, tmp_path, evil)
    finally:  # a deployment the gate let through must not outlive the test
        mm.undeploy(all_services=True)


def _refused_then_served(ip: Any, marker: Path, tmp_path: Path, evil: Path) -> None:
    ip.run_line_magic("register", f"--path {evil} --name evil")
    with pytest.raises(UsageError, match=r"Refusing to serve \(deploy, try, package or build\) evil:1: it is a pickle"):
        ip.run_line_magic("deploy", "evil:1")
    with pytest.raises(UntrustedModelError, match="Refusing to serve"):
        api.try_score_script("evil:1", sample=[[1.0]])
    with pytest.raises(UntrustedModelError, match="Refusing to serve"):
        api.package("evil:1", tmp_path / "context", wheels=False)
    with pytest.raises(UntrustedModelError, match="Refusing to serve"):
        mm.deploy("evil:1", target="docker", name="evil-box")  # refused before any image is built
    from mlops_magics.api import profile

    with pytest.raises(UntrustedModelError, match="Refusing to serve"):
        profile("evil:1", [[1.0]], target="local", duration=0.1, concurrency=[1])
    assert not marker.exists()
    assert mm.list_deployments() == [] and not (tmp_path / "context").exists()

    mm.trust_model("evil:1")
    service = ip.run_line_magic("deploy", "evil:1 --name evil-svc")
    assert service.state == "running"
    assert marker.read_text() != str(os.getpid())  # the service's process unpickled it


def test_validation_and_onnx_conversion_load_through_the_same_gate(ip: Any, evil: Path, marker: Path) -> None:
    ip.run_line_magic("register", f"--path {evil} --name evil")
    ip.user_ns.update(X=np.ones((3, 4)), y=np.zeros(3))
    with pytest.raises(UsageError, match="Refusing to load evil:1"):
        ip.run_line_magic("validate", "evil:1 --data X --labels y --metric accuracy")
    with pytest.raises(UsageError, match="Refusing to load evil:1"):
        ip.run_line_magic("onnx", "evil:1 --data X")
    assert not marker.exists()


def test_a_pytorch_file_from_a_path_is_untrusted_too(ip: Any, tmp_path: Path, marker: Path) -> None:
    v = ip.run_line_magic("register", f"--path {evil_pickle(tmp_path / 'net.pt', marker)} --name net")
    assert v.flavor == "pytorch" and "torch.save" in (trust.load_risk(v) or "")
    with pytest.raises(UsageError, match="Refusing to load net:1: it is a PyTorch file saved whole"):
        ip.run_line_magic("load_model", "net:1")
    assert not marker.exists()


def test_a_folder_holding_a_pickle_loads_as_a_path_but_serves_only_once_trusted(
    ip: Any, tmp_path: Path, marker: Path
) -> None:
    folder = tmp_path / "outputs"
    (folder / "sub").mkdir(parents=True)
    evil_pickle(folder / "sub" / "weights.dat", marker)  # a pickle by its first bytes, whatever its name
    (folder / "vocab.txt").write_text("a\n")
    v = ip.run_line_magic("register", f"--path {folder} --name bundle")
    assert v.flavor_options["pickles"] == ["outputs/sub/weights.dat"]
    assert trust.load_risk(v) is None and "outputs/sub/weights.dat" in (trust.serve_risk(v) or "")
    assert ip.run_line_magic("load_model", "bundle:1 --as bundle") == v.artifact_path / "outputs"
    with pytest.raises(UntrustedModelError, match=r"Refusing to serve .*bundle:1: it is a folder with pickle files "
                                                  r"\(outputs/sub/weights.dat\)"):
        api.package("bundle:1", tmp_path / "context", wheels=False)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "weights.bin").write_bytes(b"\x00" * 10)
    clean = ip.run_line_magic("register", f"--path {plain} --name clean")
    assert trust.serve_risk(clean) is None and trust.status(clean).startswith("not needed: files")
    assert not marker.exists()


def test_an_onnx_file_from_a_path_needs_no_trust(ip: Any, tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="the onnx package is in the test extra")
    from onnx import TensorProto, helper, save

    graph = helper.make_graph([helper.make_node("Abs", ["x"], ["y"])], "abs",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    save(helper.make_model(graph), str(tmp_path / "abs.onnx"))
    v = ip.run_line_magic("register", f"--path {tmp_path / 'abs.onnx'} --name abs")
    assert (v.origin, v.trusted) == ("path", False)
    assert trust.status(v) == "not needed: an ONNX graph (loading it runs no code)"
    assert "UNTRUSTED" not in repr(v)
    assert ip.run_line_magic("load_model", "abs:1").graph.node[0].op_type == "Abs"


# -- skops ----------------------------------------------------------------------------------


def _pipeline(iris: Any) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(*iris)


def test_format_skops_round_trips_a_pipeline_without_pickle(ip: Any, iris: Any) -> None:
    pytest.importorskip("skops", reason="skops is in the test extra")
    pipe = _pipeline(iris)
    ip.user_ns["pipe"] = pipe
    v = ip.run_line_magic("register", "pipe --format skops")
    assert (v.flavor, v.flavor_options["serializer"], [f.path for f in v.files]) == ("sklearn", "skops",
                                                                                     ["model.skops"])
    assert v.flavor_options["untrusted_types"] == [] and trust.load_risk(v) is None
    import zipfile

    with zipfile.ZipFile(v.artifact_path / "model.skops") as archive:  # a schema and arrays, no pickle inside
        assert not any(trust.is_pickle_file(Path(name)) for name in archive.namelist())
    loaded = ip.run_line_magic("load_model", "pipe:1 --as loaded")
    np.testing.assert_array_equal(loaded.predict_proba(iris[0]), pipe.predict_proba(iris[0]))
    script = mm.generate_score_script("pipe:1")
    assert "import skops.io as sio" in script and "TRUSTED = []" in script and "joblib" not in script


def test_a_skops_model_deploys_with_its_generated_script_and_environment(ip: Any, iris: Any) -> None:
    pytest.importorskip("skops", reason="skops is in the test extra")
    pipe = _pipeline(iris)
    ip.user_ns.update(pipe=pipe, X=iris[0])
    ip.run_line_magic("register", "pipe --format skops --sample X[:2]")
    env = mm.set_environment("pipe", from_kernel=True)
    assert any(pin.startswith("skops==") for pin in env.pip)
    assert ip.run_line_magic("deploy", "pipe:1").state == "running"
    try:
        assert mm.call("pipe", iris[0][:5]) == pipe.predict(iris[0][:5]).tolist()
    finally:
        mm.undeploy("pipe")


def test_a_skops_file_from_a_path_with_only_default_types_loads_untrusted(ip: Any, iris: Any, tmp_path: Path) -> None:
    sio = pytest.importorskip("skops.io", reason="skops is in the test extra")
    pipe = _pipeline(iris)
    sio.dump(pipe, tmp_path / "pipe.skops")
    v = ip.run_line_magic("register", f"--path {tmp_path / 'pipe.skops'} --name pipe")
    assert (v.flavor, v.flavor_options["serializer"], v.trusted) == ("sklearn", "skops", False)
    assert trust.status(v).startswith("not needed: a skops file")
    loaded = ip.run_line_magic("load_model", "pipe:1 --as loaded")
    np.testing.assert_array_equal(loaded.predict(iris[0]), pipe.predict(iris[0]))


class Sneaky:
    """A type skops does not trust: loading one calls its ``__setstate__``, which writes a marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def fit(self, X: Any, y: Any = None) -> Sneaky:
        return self

    def predict(self, X: Any) -> Any:
        return np.zeros(len(X))

    def __getstate__(self) -> dict[str, Any]:
        return {"marker": self.marker}

    def __setstate__(self, state: dict[str, Any]) -> None:
        Path(state["marker"]).write_text("ran")
        self.marker = state["marker"]


def test_a_skops_file_with_an_unknown_type_is_refused_listing_it_until_trusted(
    ip: Any, tmp_path: Path, marker: Path
) -> None:
    sio = pytest.importorskip("skops.io", reason="skops is in the test extra")
    sio.dump(Sneaky(marker), tmp_path / "sneaky.skops")
    v = ip.run_line_magic("register", f"--path {tmp_path / 'sneaky.skops'} --name sneaky")
    assert v.flavor_options["untrusted_types"] == [f"{__name__}.Sneaky"]
    assert f"TRUSTED = ['{__name__}.Sneaky']" in mm.generate_score_script("sneaky:1")
    with pytest.raises(UsageError, match=rf"Refusing to load sneaky:1: it is a skops file with types outside skops' "
                                         rf"trusted defaults \({__name__}.Sneaky\)"):
        ip.run_line_magic("load_model", "sneaky:1")
    with pytest.raises(UsageError, match="Refusing to serve"):
        ip.run_line_magic("deploy", "sneaky:1")
    assert not marker.exists()
    registry = mm.default_registry()
    with registry.write() as db:  # as if recorded by a skops that trusted more: the file is what counts
        db.execute("UPDATE versions SET flavor_options = json_set(flavor_options, '$.untrusted_types', json('[]'))")
    with pytest.raises(UsageError, match=rf"Refusing to load sneaky.skops: it holds types outside skops' trusted "
                                         rf"defaults \({__name__}.Sneaky\), and loading them runs their code. "
                                         r"sneaky:1 was registered from .*%trust sneaky:1"):
        ip.run_line_magic("load_model", "sneaky:1")
    assert not marker.exists()

    ip.run_line_magic("trust", "sneaky:1")
    assert isinstance(ip.run_line_magic("load_model", "sneaky:1"), Sneaky)
    assert marker.read_text() == "ran"


def test_format_skops_mistakes_are_explained(ip: Any, iris_lr: Any, tmp_path: Path) -> None:
    pytest.importorskip("skops", reason="skops is in the test extra")
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec("class Local:\n    def fit(self, X, y=None): return self\n    def predict(self, X): return X\n", namespace)
    ip.user_ns.update(local=namespace["Local"](), table={"a": 1}, clf=iris_lr)
    with pytest.raises(UsageError, match=r"--format skops stores classes by name, and __main__.Local is defined in "
                                         r"the notebook"):
        ip.run_line_magic("register", "local --format skops")
    with pytest.raises(UsageError, match=r"--format skops saves scikit-learn models, and a builtins.dict is a "
                                         r"'pickle' model"):
        ip.run_line_magic("register", "table --format skops")
    with pytest.raises(UsageError, match="argument --format: invalid choice: 'json'"):
        ip.run_line_magic("register", "clf --format json")
    (tmp_path / "m.pkl").write_bytes(b"x")
    with pytest.raises(UsageError, match="a file keeps its own format"):
        ip.run_line_magic("register", f"--path {tmp_path / 'm.pkl'} --name m --format skops")
    (tmp_path / "bad.skops").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="bad.skops is not a valid skops file"):
        ip.run_line_magic("register", f"--path {tmp_path / 'bad.skops'} --name bad")
    with pytest.raises(InvalidInputError, match="Unknown format 'json'"):
        mm.register(iris_lr, "x", format="json")
    assert mm.list_models() == ()


def test_skops_cannot_save_what_it_cannot_serialize(registry: Registry) -> None:
    pytest.importorskip("skops", reason="skops is in the test extra")
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier().fit([[0], [1]], [0, 1])
    model.rows = (i for i in range(3))  # type: ignore[attr-defined]
    with pytest.raises(SerializationError, match="skops cannot save a sklearn.dummy.DummyClassifier: TypeError: "
                                                 "cannot pickle 'generator' object. Register it without --format"):
        mm.register(model, "dummy", format="skops")
    assert mm.list_models() == () and not list(registry.artifacts.staging_root.iterdir())


# -- the registry ---------------------------------------------------------------------------


def test_migration_6_trusts_what_was_saved_from_memory_and_not_what_came_from_a_path(
    home: Path, iris_lr: Any, evil: Path, marker: Path
) -> None:
    mm.register(iris_lr, "iris", registry=Registry(home))
    mm.register(name="evil", path=evil, registry=Registry(home))
    roll_back(home / "registry.db", 5)
    reg = Registry(home)
    iris, bad = reg.get("iris:1"), reg.get("evil:1")
    assert (iris.origin, iris.trusted_by, iris.trusted_text) == ("object", iris.created_by, iris.created_text)
    assert (bad.origin, bad.origin_path, bad.trusted) == ("path", None, False)
    with pytest.raises(UntrustedModelError, match="Refusing to load evil:1: .* evil:1 was registered from a file and "):
        mm.load_model("evil:1", registry=reg)
    assert mm.load_model("iris:1", registry=reg).predict([[5.1, 3.5, 1.4, 0.2]]).tolist() == [0]
    assert not marker.exists()


def test_a_row_that_does_not_say_is_untrusted(registry: Registry, evil: Path, marker: Path) -> None:
    v = mm.register(name="evil", path=evil, trust=True)
    with registry.write() as db:  # e.g. a version written back by a tool that knows nothing of trust
        db.execute("UPDATE versions SET origin = 'unknown', trusted_at = NULL, trusted_by = NULL")
    again = registry.get(v.ref)
    assert not again.trusted and "of unknown origin" in trust.status(again)
    with pytest.raises(UntrustedModelError):
        mm.load_model(v.ref)
    assert not marker.exists()


def test_the_pickled_flavors_refuse_to_unpickle_unless_told_the_version_is_trusted(
    registry: Registry, evil: Path, marker: Path
) -> None:
    v = mm.register(name="evil", path=evil)
    folder = registry.verified_artifact(v)
    for name, options in (("pickle", {"file": "evil.pkl", "serializer": "joblib"}),
                          ("sklearn", {"file": "evil.pkl", "serializer": "cloudpickle"}),
                          ("pytorch", {"file": "evil.pkl"})):
        with pytest.raises(UntrustedModelError, match="Refusing to"):
            flavors.get_flavor(name).load(folder, options)
    assert not marker.exists()
    flavors.get_flavor("pickle").load(folder, {"file": "evil.pkl", "serializer": "joblib"}, trusted=True)
    assert marker.exists()


def test_pickle_files_are_found_by_name_or_first_bytes(tmp_path: Path, marker: Path) -> None:
    for name in ("a.pkl", "b.PICKLE", "c.joblib", "d.pkl.gz", "e.pt", "f.pth", "g.ckpt"):
        (tmp_path / name).write_bytes(b"anything")
    evil_pickle(tmp_path / "h.bin", marker)
    (tmp_path / "plain.bin").write_bytes(b"\x80\x09 not a pickle protocol")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").write_bytes(b"")
    import zipfile

    with zipfile.ZipFile(tmp_path / "pytorch_model.bin", "w") as archive:  # how torch.save lays a module out
        archive.writestr("archive/data.pkl", b"\x80\x02.")
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as archive:
        archive.writestr("table.csv", "a,b\n")
    import joblib

    # protocol 0 and 1 are text-like: told by opcodes that name a callable and call it
    payload = _Payload(f"open({str(marker)!r}, 'w')")
    (tmp_path / "p0.bin").write_bytes(pickle.dumps(payload, protocol=0))
    (tmp_path / "p1.bin").write_bytes(pickle.dumps(payload, protocol=1))
    (tmp_path / "data0.bin").write_bytes(pickle.dumps([1, 2, "three"], protocol=0))  # plain data: runs nothing
    joblib.dump({"w": [1, 2]}, tmp_path / "compressed.bin", compress=3)  # zlib: it may hold anything
    (tmp_path / "cats.txt").write_text("cat\ndog\nRabbit\n")
    found = trust.pickle_files(tmp_path)
    assert found == ["a.pkl", "b.PICKLE", "c.joblib", "compressed.bin", "d.pkl.gz", "e.pt",
                                            "f.pth", "g.ckpt", "h.bin", "p0.bin", "p1.bin", "pytorch_model.bin"]
    assert not marker.exists()
