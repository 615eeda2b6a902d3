"""The embedded registry: versions, tags, aliases and their history, deletes, schema and locks."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import mlops_magics as mm
from mlops_magics.errors import (
    ConflictError,
    InvalidInputError,
    MlopsError,
    NotFoundError,
    RegistryLockedError,
    SchemaVersionError,
)
from mlops_magics.registry import Lineage, Registry
from mlops_magics.registry.migrations import SCHEMA_VERSION
from tests.schema import roll_back


def test_versions_count_up_per_name_and_are_never_reused(registry: Registry, iris_lr: Any) -> None:
    assert [mm.register(iris_lr, "a").version for _ in range(3)] == [1, 2, 3]
    assert mm.register(iris_lr, "b").version == 1
    mm.delete_model("a:3")
    assert mm.register(iris_lr, "a").version == 4


def test_registry_is_a_wal_sqlite_file_under_mlops_home(registry: Registry, home: Path, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris")
    conn = sqlite3.connect(home / "registry.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT name, version FROM versions").fetchall() == [("iris", 1)]
    assert conn.execute("SELECT max(id) FROM _migrations").fetchone()[0] == SCHEMA_VERSION


def test_a_version_records_what_it_is_and_where_it_came_from(registry: Registry, iris_lr: Any, iris: Any) -> None:
    X, _ = iris
    v = mm.register(iris_lr, "iris", tags={"team": "cv"}, description="first try", sample=X[:3])
    assert (v.name, v.version, v.flavor, v.framework) == ("iris", 1, "sklearn", "scikit-learn")
    import sklearn

    assert v.framework_version == sklearn.__version__
    assert len(v.sha256) == 64 and v.size == sum(f.size for f in v.files) > 0
    assert [f.path for f in v.files] == ["model.pkl"]
    assert dict(v.tags) == {"team": "cv"} and v.description == "first try"
    assert v.signature is not None and v.signature["inputs"] == {"type": "tensor", "dtype": "float64", "shape": [-1, 4]}
    assert v.signature["outputs"]["type"] == "tensor"
    assert v.input_example is not None and v.input_example["data"] == X[:3].tolist()
    assert v.lineage.python_version and v.created_by
    assert abs(v.created_at - datetime.now(timezone.utc)) < timedelta(minutes=1)
    assert mm.get_model("iris:1") == v


def test_versions_are_frozen(registry: Registry, iris_lr: Any) -> None:
    v = mm.register(iris_lr, "iris", tags={"a": "1"})
    with pytest.raises(AttributeError):
        v.version = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        v.tags["a"] = "2"  # type: ignore[index]


def test_list_filters_by_name_glob_tags_and_latest(registry: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris-lr", tags={"team": "cv", "stage": "dev"})
    mm.register(iris_lr, "iris-lr", tags={"team": "cv"})
    mm.register(iris_lr, "wine", tags={"team": "nlp"})
    assert [v.ref for v in mm.list_models()] == ["iris-lr:1", "iris-lr:2", "wine:1"]
    assert [v.ref for v in mm.list_models("iris*")] == ["iris-lr:1", "iris-lr:2"]
    assert [v.ref for v in mm.list_models(tags=["team=cv", "stage"])] == ["iris-lr:1"]
    assert [v.ref for v in mm.list_models(tags={"team": "nlp"})] == ["wine:1"]
    assert [v.ref for v in mm.list_models(latest=True)] == ["iris-lr:2", "wine:1"]
    assert mm.list_models("nothing*") == ()


def test_listing_shows_itself_as_a_table(registry: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris", tags={"team": "cv"})
    listing = mm.list_models()
    assert "iris" in repr(listing) and "team=cv" in repr(listing)
    html = listing._repr_html_()
    assert "<table" in html and "1 model version" in html and "scikit-learn" in html
    assert list(listing.to_dataframe()["name"]) == ["iris"]
    assert "<table" in listing[0]._repr_html_() and "sha256" in listing[0]._repr_html_()


def test_tags_can_be_set_and_removed_but_a_missing_key_is_named(registry: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris", tags={"a": "1", "b": "2"})
    v = mm.tag_model("iris:1", ["c=3", "a=9"], remove=["b"])
    assert dict(v.tags) == {"a": "9", "c": "3"}
    with pytest.raises(NotFoundError, match=r"iris:1 has no tag 'zz'. Tags: a, c"):
        mm.tag_model("iris:1", remove=["zz"])
    assert dict(mm.get_model("iris:1").tags) == {"a": "9", "c": "3"}


def test_alias_moves_are_recorded_and_answer_which_version_on_a_date(registry: Registry, iris_lr: Any) -> None:
    for _ in range(3):
        mm.register(iris_lr, "iris")
    mm.set_alias("iris:1", "production")
    after_first = datetime.now(timezone.utc)
    time.sleep(0.01)
    mm.set_alias("iris:3", "production")
    assert mm.get_model("iris@production").version == 3
    assert mm.get_model("iris@production", as_of=after_first).version == 1
    assert [(e.alias, e.version) for e in mm.alias_history("iris")] == [("production", 1), ("production", 3)]
    mm.remove_alias("iris", "production")
    assert mm.alias_history("iris", "production")[-1].version is None
    with pytest.raises(NotFoundError, match="has no alias 'production'"):
        mm.get_model("iris@production")
    assert mm.get_model("iris@production", as_of=after_first).version == 1


def test_alias_calls_take_any_reference_to_the_model(registry: Registry, iris_lr: Any) -> None:
    for _ in range(2):
        mm.register(iris_lr, "iris")
    mm.set_alias("iris:2", "production")
    assert [e.version for e in mm.alias_history("iris@production")] == [2]  # the model of a reference
    assert mm.alias_history("iris:1", "production") == mm.alias_history("iris", "production")
    assert mm.remove_alias("iris:2", "production") == "iris"
    assert mm.alias_history("iris", "production")[-1].version is None


def test_alias_history_of_an_unknown_model_is_an_error_not_an_empty_list(registry: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris")
    assert mm.alias_history("iris") == []
    with pytest.raises(NotFoundError, match="No model named 'irsi'. Did you mean 'iris'"):
        mm.alias_history("irsi")


def test_as_of_a_date_before_the_alias_existed_is_a_clear_error(registry: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris", alias="staging")
    with pytest.raises(NotFoundError, match=r"no alias 'staging' on 2000-01-01"):
        mm.get_model("iris@staging", as_of="2000-01-01")
    with pytest.raises(NotFoundError, match="had no version yet"):
        mm.get_model("iris", as_of="2000-01-01")
    with pytest.raises(InvalidInputError, match="Invalid date 'yesterday'"):
        mm.get_model("iris", as_of="yesterday")


def test_not_found_errors_list_what_exists(registry: Registry, iris_lr: Any) -> None:
    with pytest.raises(NotFoundError, match="The registry is empty"):
        mm.get_model("iris")
    mm.register(iris_lr, "iris")
    mm.register(iris_lr, "iris", alias="staging")
    mm.register(iris_lr, "digits")
    with pytest.raises(NotFoundError, match=r"No model named 'irs'. Did you mean 'iris'\? Registered: 'digits', 'iris"):
        mm.get_model("irs")
    with pytest.raises(NotFoundError, match=r"no version 7. Versions: 1-2 \(latest 2\)"):
        mm.get_model("iris:7")
    with pytest.raises(NotFoundError, match=r"no alias 'prod'. Aliases: staging -> 2"):
        mm.get_model("iris@prod")


def test_deleting_removes_aliases_and_the_unshared_artifact(registry: Registry, iris_lr: Any, iris_tree: Any) -> None:
    shared = mm.register(iris_lr, "iris")
    mm.register(iris_lr, "iris-copy")  # same content: same artifact
    own = mm.register(iris_tree, "iris", alias="staging")
    mm.delete_model("iris:2")
    assert not own.artifact_path.exists()  # type: ignore[union-attr]
    assert mm.alias_history("iris", "staging")[-1].version is None
    mm.delete_model("iris:1")
    assert shared.artifact_path.exists()  # type: ignore[union-attr]
    assert mm.load_model("iris-copy").predict([[5.1, 3.5, 1.4, 0.2]]).tolist() == [0]
    assert not list(registry.artifacts.trash.iterdir())


def test_deleting_says_which_aliases_went_with_the_version(registry: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris", alias="staging")
    mm.register(iris_lr, "iris", alias="staging")
    mm.set_alias("iris:2", "production")
    mm.set_alias("iris:1", "old")
    gone = mm.delete_model("iris:2")
    assert str(gone) == "Deleted iris:2 (removed aliases production, staging)."
    assert gone.ref == "iris:2" and gone.removed_aliases == ("production", "staging")
    assert str(mm.delete_model("iris:1")) == "Deleted iris:1 (removed alias old)."
    mm.register(iris_lr, "iris")
    assert str(mm.delete_model("iris:3")) == "Deleted iris:3."


def test_delete_needs_an_exact_version(registry: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris", alias="production")
    for ref in ("iris", "iris@production", "iris:latest"):
        with pytest.raises(InvalidInputError, match="Say which version to delete"):
            mm.delete_model(ref)
    assert mm.get_model("iris:1")


def test_deleting_a_version_a_live_deployment_uses_is_refused_naming_it(registry: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris")
    registry.record_deployment("iris-svc", "iris:1", target="local", state="running", url="http://127.0.0.1:5001")
    with pytest.raises(ConflictError, match=r"deployment 'iris-svc' \(local, running\) uses it.*%undeploy iris-svc"):
        mm.delete_model("iris:1")
    assert mm.get_model("iris:1")
    registry.set_deployment_state("iris-svc", "deleted")
    mm.delete_model("iris:1")
    assert registry.get_deployment("iris-svc").state == "deleted"


def test_deployments_are_recorded_and_unknown_names_are_listed(registry: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris", alias="production")
    d = registry.record_deployment("svc", "iris@production", target="local", state="creating", config={"port": 1})
    assert (d.model_name, d.model_version, d.is_live, dict(d.config)) == ("iris", 1, True, {"port": 1})
    assert [x.name for x in registry.deployments()] == ["svc"]
    with pytest.raises(NotFoundError, match=r"No deployment named 'sv'. Did you mean 'svc'\? Deployments: 'svc' "
                                            r"\(creating\)\. Deploy one with %deploy MODEL --name sv\."):
        registry.get_deployment("sv")


def test_an_unknown_service_name_suggests_live_ones_first_and_lists_undeployed_ones_apart(
        registry: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris")
    for name, state in (("wine", "running"), ("wide", "deleted"), ("old", "deleted"), ("iris", "stopped")):
        registry.record_deployment(name, "iris:1", target="local", state=state, url="http://127.0.0.1:9")
    with pytest.raises(NotFoundError) as typo:
        registry.get_deployment("wien")
    assert str(typo.value) == ("No deployment named 'wien'. Did you mean 'wine'? Deployments: 'iris' (stopped), "
                               "'wine' (running). Undeployed: 'old', 'wide'. Deploy one with %deploy MODEL --name "
                               "wien.")
    with pytest.raises(NotFoundError, match=r"Did you mean 'old' \(undeployed\)\?"):
        registry.get_deployment("odl")


def test_an_alias_typo_suggests_the_alias(registry: Registry, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris", alias="production")
    with pytest.raises(NotFoundError, match=r"no alias 'prodution'. Did you mean 'production'\? Aliases: "
                                            r"production -> 1\."):
        mm.get_model("iris@prodution")
    with pytest.raises(NotFoundError, match=r"No model named 'IRIS'. Did you mean 'iris'\?"):
        mm.get_model("IRIS")  # case alone does not stop a suggestion


def _visible(html: str) -> str:
    """What a card shows before any <details> is opened (the <summary> lines stay)."""
    import re

    return re.sub(r"<details>(<summary>.*?</summary>).*?</details>", r"\1", html, flags=re.S)


def test_a_version_card_is_compact_signature_as_a_folded_table_lineage_in_one_line(
        registry: Registry) -> None:
    import pandas as pd
    from sklearn.datasets import load_wine
    from sklearn.tree import DecisionTreeClassifier

    X, y = load_wine(return_X_y=True, as_frame=True)  # 13 features
    model = DecisionTreeClassifier(max_depth=2).fit(X.iloc[:, :2], y)
    wide = mm.register(model, "wine", sample=X.iloc[:5, :2], provenance=Lineage(
        notebook="/home/me/notebooks/06_monitor.ipynb", cell_execution_count=12, git_commit="1a2b3c4d5e6f7a8b"))
    frame = pd.DataFrame(X)
    many = DecisionTreeClassifier(max_depth=2).fit(frame, y)
    card13 = mm.register(many, "wine", sample=frame[:5])._repr_html_()
    shown = _visible(card13)
    assert "13 columns: alcohol, malic_acid, ash, ... (show all)" in shown  # folded past 8 columns
    assert "proline" not in shown and "proline" in card13  # on demand
    assert '"dtype"' not in shown and "{" not in shown  # no JSON on the face of the card
    assert "in: dataframe, 13 columns &middot; out: tensor int64 [-1]" in shown
    assert len(shown) < 2500 and len(card13) < 9000, (len(shown), len(card13))
    card2 = _visible(wide._repr_html_())
    assert "<td style='padding:0 8px 0 0'>alcohol</td><td style='padding:0;color:#616161'>float64</td>" in card2
    assert "notebook 06_monitor.ipynb, cell [12], git 1a2b3c4d" in card2  # lineage, one line


def test_a_registry_written_by_a_newer_schema_is_refused(home: Path, iris_lr: Any) -> None:
    Registry(home)
    conn = sqlite3.connect(home / "registry.db")
    conn.execute("INSERT INTO _migrations VALUES (?, 'from the future', '2030-01-01')", [SCHEMA_VERSION + 1])
    conn.commit()
    with pytest.raises(SchemaVersionError, match=rf"schema version {SCHEMA_VERSION + 1}.*Upgrade mlops-magics"):
        Registry(home)


def test_a_file_that_is_not_a_database_gets_a_clear_error(home: Path) -> None:
    home.mkdir(parents=True)
    (home / "registry.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(MlopsError, match="not a usable registry database"):
        Registry(home)


def test_a_locked_registry_waits_then_fails_clearly(home: Path, iris_lr: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    Registry(home)
    holder = sqlite3.connect(home / "registry.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    monkeypatch.setenv("MLOPS_LOCK_TIMEOUT", "0.3")
    reg = Registry(home)
    started = time.monotonic()
    with pytest.raises(RegistryLockedError, match=r"locked by another process: waited 0.3 s.*MLOPS_LOCK_TIMEOUT"):
        mm.register(iris_lr, "iris", registry=reg)
    assert time.monotonic() - started >= 0.25
    assert reg.find() == ()  # readers are not blocked by the writer (WAL)
    holder.execute("ROLLBACK")
    assert mm.register(iris_lr, "iris", registry=reg).version == 1
    assert not list(reg.artifacts.staging_root.iterdir())


def test_a_lock_released_within_the_timeout_is_waited_for(home: Path, iris_lr: Any) -> None:
    Registry(home)
    holder = sqlite3.connect(home / "registry.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, lambda: holder.execute("COMMIT")).start()
    assert mm.register(iris_lr, "iris", registry=Registry(home, lock_timeout=5)).version == 1


def test_invalid_lock_timeout_setting_is_explained(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_LOCK_TIMEOUT", "soon")
    with pytest.raises(InvalidInputError, match="MLOPS_LOCK_TIMEOUT='soon' is not a number of seconds"):
        Registry(home)


def test_each_thread_gets_its_own_connection(registry: Registry, iris_lr: Any) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                mm.register(iris_lr, "threads", registry=registry)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [v.version for v in mm.list_models("threads")] == list(range(1, 21))


def test_a_long_listing_shows_the_first_rows_and_says_how_to_see_the_rest(registry: Registry) -> None:
    from mlops_magics.registry.cards import MAX_ROWS

    for n in range(MAX_ROWS + 5):
        mm.register({"n": n}, "many")
    listing = mm.list_models()
    assert len(listing) == MAX_ROWS + 5
    assert "... 5 more not shown" in repr(listing) and "... 5 more not shown" in listing._repr_html_()
    assert listing._repr_html_().count("<tr>") == MAX_ROWS + 1  # header + shown rows
    assert len(listing.to_dataframe()) == MAX_ROWS + 5


def test_an_older_registry_is_migrated_in_place_keeping_its_versions(home: Path, iris_lr: Any) -> None:
    mm.register(iris_lr, "iris", registry=Registry(home))
    conn = roll_back(home / "registry.db", 1)
    reg = Registry(home)
    assert [v.ref for v in reg.find()] == ["iris:1"]
    assert conn.execute("SELECT max(id) FROM _migrations").fetchone()[0] == SCHEMA_VERSION
    reg.set_inference("iris", script="def init():\n    pass\n")
    assert reg.inference(reg.get("iris")).script == "def init():\n    pass\n"
